package bench

import (
	"strconv"
	"time"
)

// metricSpec describes one simulated metric: a bounded random walk printed
// with a fixed number of decimals, like a real sensor's reading.
type metricSpec struct {
	name       string
	unit       string // SenML unit, "" for none
	start      float64
	step       float64
	lo, hi     float64
	prec       int
	startNoise float64 // spread of the starting value across devices
}

// metricSpecs are the metrics a device publishes, in order; a run with more
// metrics than listed adds "metric_N" walks.
var metricSpecs = []metricSpec{
	{name: "temperature", unit: "Cel", start: 21, step: 0.05, lo: -40, hi: 85, prec: 2, startNoise: 3},
	{name: "humidity", unit: "%RH", start: 48, step: 0.1, lo: 0, hi: 100, prec: 1, startNoise: 10},
	{name: "vibration", unit: "m/s2", start: 0.012, step: 0.0005, lo: 0, hi: 1, prec: 4, startNoise: 0.005},
	{name: "pressure", unit: "hPa", start: 1013.25, step: 0.05, lo: 900, hi: 1100, prec: 2, startNoise: 5},
	{name: "voltage", unit: "V", start: 3.3, step: 0.002, lo: 0, hi: 5, prec: 3, startNoise: 0.05},
	{name: "current", unit: "A", start: 0.45, step: 0.005, lo: 0, hi: 10, prec: 3, startNoise: 0.1},
	{name: "co2", unit: "ppm", start: 420, step: 1, lo: 0, hi: 5000, prec: 0, startNoise: 30},
	{name: "illuminance", unit: "lx", start: 300, step: 2, lo: 0, hi: 100000, prec: 1, startNoise: 100},
}

func specFor(i int) metricSpec {
	if i < len(metricSpecs) {
		return metricSpecs[i]
	}
	return metricSpec{name: "metric_" + strconv.Itoa(i+1), start: 50, step: 0.5, lo: 0, hi: 100, prec: 2, startNoise: 10}
}

// payloadGen writes one device's telemetry payloads into a caller's buffer
// without allocating. It is owned by one writer goroutine.
type payloadGen struct {
	senml bool
	// batch > 0 makes gateway batches of that many readings of device.
	isBatch bool
	batch   int
	device  []byte
	t0      uint64 // batch timeline origin (Unix ms) and the seq it starts at
	seq0    uint64
	specs   []metricSpec
	keys    [][]byte // JSON: `"name":`; SenML: `"n":"name","u":"unit","v":`
	vals    []float64
	rng     uint64

	sec    int64  // Unix second that secStr holds
	secStr []byte // "2006-01-02T15:04:05" of sec
}

// newPayloadGen returns a generator of metrics metrics seeded by seed.
func newPayloadGen(format string, metrics int, seed uint64) *payloadGen {
	g := &payloadGen{senml: format == FormatSenML, isBatch: format == FormatBatch, rng: seed | 1, sec: -1}
	for i := range metrics {
		s := specFor(i)
		g.specs = append(g.specs, s)
		var k []byte
		if g.senml {
			k = append(k, `"n":"`...)
			k = append(k, s.name...)
			k = append(k, '"')
			if s.unit != "" {
				k = append(k, `,"u":"`...)
				k = append(k, s.unit...)
				k = append(k, '"')
			}
			k = append(k, `,"v":`...)
		} else {
			k = append(k, '"')
			k = append(k, s.name...)
			k = append(k, `":`...)
		}
		g.keys = append(g.keys, k)
		g.vals = append(g.vals, clamp(s.start+(g.float()-0.5)*2*s.startNoise, s.lo, s.hi))
	}
	return g
}

// forDevice makes g write gateway batches of n readings of device id
// when g's format is FormatBatch; otherwise it changes nothing.
func (g *payloadGen) forDevice(id string, n int) *payloadGen {
	if g.isBatch {
		g.batch, g.device = max(n, 1), []byte(id)
	}
	return g
}

// float returns a pseudo-random number in [0, 1) (xorshift64*).
func (g *payloadGen) float() float64 {
	g.rng ^= g.rng >> 12
	g.rng ^= g.rng << 25
	g.rng ^= g.rng >> 27
	return float64((g.rng*2685821657736338717)>>11) / (1 << 53)
}

func clamp(v, lo, hi float64) float64 { return min(max(v, lo), hi) }

// step advances every metric's random walk.
func (g *payloadGen) step() {
	for i, s := range g.specs {
		g.vals[i] = clamp(g.vals[i]+(g.float()-0.5)*2*s.step, s.lo, s.hi)
	}
}

// appendTS appends now as RFC 3339 UTC with milliseconds, formatting the
// date and time of day only once a second.
func (g *payloadGen) appendTS(b []byte, now time.Time) []byte {
	if sec := now.Unix(); sec != g.sec {
		g.sec = sec
		g.secStr = now.UTC().AppendFormat(g.secStr[:0], "2006-01-02T15:04:05")
	}
	b = append(b, g.secStr...)
	ms := now.Nanosecond() / 1e6
	return append(b, '.', byte('0'+ms/100), byte('0'+ms/10%10), byte('0'+ms%10), 'Z')
}

// append appends the payload of message seq sent at now: the DESIGN §3
// JSON object {"seq":N,"ts":"…","data":{…}} (device_id is left out: the
// topic names the device), or a SenML pack [{"bt":…,"n":…,"u":…,"v":…},…]
// which, having no field for it, carries no seq.
func (g *payloadGen) append(b []byte, seq uint64, now time.Time) []byte {
	if g.batch > 0 {
		return g.appendBatch(b, seq, now)
	}
	g.step()
	if g.senml {
		b = append(b, '[')
		for i, k := range g.keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, '{')
			if i == 0 {
				b = append(b, `"bt":`...)
				b = strconv.AppendInt(b, now.Unix(), 10)
				ms := now.Nanosecond() / 1e6
				b = append(b, '.', byte('0'+ms/100), byte('0'+ms/10%10), byte('0'+ms%10), ',')
			}
			b = append(b, k...)
			b = strconv.AppendFloat(b, g.vals[i], 'f', g.specs[i].prec, 64)
			b = append(b, '}')
		}
		return append(b, ']')
	}
	b = append(b, `{"seq":`...)
	b = strconv.AppendUint(b, seq, 10)
	b = append(b, `,"ts":"`...)
	b = g.appendTS(b, now)
	b = append(b, `","data":{`...)
	for i, k := range g.keys {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, k...)
		b = strconv.AppendFloat(b, g.vals[i], 'f', g.specs[i].prec, 64)
	}
	return append(b, '}', '}')
}

// appendBatch appends {"readings":[…]} of g.batch readings of g.device.
// Reading r of message seq has seq seq*batch+r and a timestamp 1 ms after
// the previous reading of the device (a synthetic timeline from the first
// message on), so that none overwrites another in the store.
func (g *payloadGen) appendBatch(b []byte, seq uint64, now time.Time) []byte {
	if g.t0 == 0 {
		g.t0, g.seq0 = uint64(now.UnixMilli()), seq
	}
	b = append(b, `{"readings":[`...)
	base := g.t0 + (seq-g.seq0)*uint64(g.batch)
	for r := range g.batch {
		g.step()
		if r > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"device":"`...)
		b = append(b, g.device...)
		b = append(b, `","seq":`...)
		b = strconv.AppendUint(b, seq*uint64(g.batch)+uint64(r), 10)
		b = append(b, `,"ts":`...)
		b = strconv.AppendUint(b, base+uint64(r), 10)
		b = append(b, `,"data":{`...)
		for i, k := range g.keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, k...)
			b = strconv.AppendFloat(b, g.vals[i], 'f', g.specs[i].prec, 64)
		}
		b = append(b, '}', '}')
	}
	return append(b, ']', '}')
}
