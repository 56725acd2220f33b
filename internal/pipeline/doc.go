// Package pipeline is the edge gateway's local processing of sensor
// readings (issue 3, item 4): per (sensor, metric) series it applies
// filters, anomaly detection, tumbling-window aggregation and a forwarding
// decision, in that order.
//
// A Pipeline is a pure, single-goroutine state machine. Process feeds it
// one reading; Flush(now) closes the windows that have ended. Neither reads
// the clock, so tests need no real time. Every call returns an Output: raw
// readings to forward, closed window aggregates, alert state changes, and
// dropped readings with their reason. Stats returns the counters.
//
// # Configuration
//
// The edge config's "pipeline:" key holds a list of rules (LoadYAML also
// reads a file whose only key is "pipeline", or the bare list):
//
//	pipeline:
//	  - sensors: ["boiler-*"]      # globs on the sensor id; omitted: every sensor
//	    metrics: ["temperature"]   # globs on the metric name; omitted: every metric
//	    filters:
//	      range: {min: -40, max: 125}  # either bound may be omitted
//	      deadband: 0.2                # default 0 (off)
//	      dedup: true                  # default false
//	    detect:
//	      - threshold: {above: 90, clear_below: 85, severity: critical}
//	      - threshold: {below: 5, clear_above: 8}          # severity default warning
//	      - zscore: {window: 60, threshold: 3.0, min_samples: 20}
//	      - rate: {max_per_second: 2.0}
//	    window: {size: 1m, aggregates: [count, avg, min, max, last]}
//	    forward: both                  # raw (default), aggregates or both
//
// Globs use path.Match syntax ("*", "?", "[a-z]"; "*" does not cross "/"),
// and a single string may stand for a one-element list. The first rule
// whose sensor and metric globs both match governs a series. Defaults:
// severity warning; zscore window 60, threshold 3, min_samples = window;
// aggregates all five; forward raw. Limits: zscore window 2..10000,
// 2 ≤ min_samples ≤ window, threshold > 0; max_per_second > 0; window size
// ≥ 1ms; clear_below ≤ above; clear_above ≥ below; below < above when one
// threshold has both; severities info, warning or critical. A rule with a
// window must forward aggregates or both, and those modes need a window.
// Unknown keys, duplicate keys, wrong types and explicit values that break
// these limits are errors naming the field and line, e.g.
// "line 9: pipeline[0].detect[1].zscore.window: must be ≥ 2". YAML merge
// keys ("<<: *common") are honoured.
//
// # Semantics
//
// Series without a rule pass through raw, untouched and without state.
// A series with a rule keeps state; at most Config.MaxSeries (default
// 100,000) such series exist, and readings of a new series beyond that
// are dropped with reason "series_limit". State is never evicted.
//
// Booleans and strings go through dedup only and are always forwarded raw,
// whatever the forward mode. NaN and ±Inf numbers in a series with a rule
// are dropped ("not_finite").
//
// Filters run in this order, and a filtered reading leaves the pipeline
// (no detection, no aggregation):
//   - dedup: the value (kind and content) and timestamp both equal those of
//     the previous reading received for the series, whatever became of that
//     one ("duplicate");
//   - range: v < min or v > max, bounds inclusive ("out_of_range");
//   - deadband: |v - last| < deadband, where last is the last number that
//     passed the filters ("deadband"); the first number always passes, and
//     a difference within float rounding of the deadband counts as equal
//     to it (20 → 20.2 passes a deadband of 0.2).
//
// Detectors see every accepted number in arrival order and each raises an
// alert once, then stays quiet until it clears; a clear is also an Alert
// (State "cleared"). Alert.Rule is threshold_above, threshold_below, zscore
// or rate; Message is human readable:
//   - threshold: raised when v > above (v < below); cleared when
//     v < clear_below (v > clear_above). "temperature 93.2 above 90
//     (critical)", "temperature 84 below 85, cleared (critical)".
//   - zscore: v is scored against the last `window` accepted numbers
//     BEFORE v joins them: z = (v - mean) / σ with the POPULATION standard
//     deviation σ = sqrt(Σ(x-mean)²/n). No score while fewer than
//     min_samples numbers are held or when σ = 0 (all equal; use a
//     threshold or rate detector for a stuck sensor). Raised when |z| >
//     threshold; cleared by the next scored number with |z| ≤ threshold.
//     "temperature 20 z-score 6.36 beyond ±3 (warning)".
//   - rate: Δv/Δt in units per second against the newest earlier accepted
//     number; a reading not newer than that one is not scored. Raised when
//     |rate| > max_per_second; cleared by the next scored number within it.
//     "temperature 30 changing at 5/s, faster than 2/s (warning)".
//
// Windows are tumbling, [start, start+size) with start a multiple of size
// since the Unix epoch, chosen by reading timestamp (a reading exactly on a
// boundary opens the later window). Each series has at most one open
// window. A reading in a later window closes the open one; Flush(now)
// closes every window whose end ≤ now. Empty windows emit nothing.
// Aggregates carry count, avg, min, max, and last (the value with the
// latest timestamp; the later arrival on a tie).
//
// Late readings: a number older than the start of its series' open window,
// or than the end of its last closed window, is late (Stats.Late). It is
// still detected, but not aggregated; it is forwarded raw when the forward
// mode includes raw, and dropped with reason "late" under forward:
// aggregates.
package pipeline
