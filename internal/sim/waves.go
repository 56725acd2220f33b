package sim

import (
	"math"
	"math/rand/v2"
	"time"

	"github.com/fieldhub/fieldhub/payload"
)

// Steps holds a value at one of Levels for a random time (exponentially
// distributed with mean Every), then moves to another level: a set point,
// a machine's operating mode, a valve's position. Noise adds Gaussian
// noise to every sample; the result is rounded to Decimals.
type Steps struct {
	Levels   []float64
	Every    time.Duration
	Noise    float64
	Decimals int
	rng      *rand.Rand
	level    int
	next     time.Duration // t of the next change; 0 before the first sample
	started  bool
}

// Next implements Waveform.
func (s *Steps) Next(t time.Duration) payload.Value {
	if s.rng == nil {
		s.rng = rand.New(rand.NewPCG(rand.Uint64(), 3))
	}
	if len(s.Levels) == 0 {
		return payload.NumberValue(0)
	}
	if !s.started {
		s.started = true
		s.level = s.rng.IntN(len(s.Levels))
		s.next = t + s.dwell()
	}
	for t >= s.next && len(s.Levels) > 1 {
		// Another level than the current one.
		l := s.rng.IntN(len(s.Levels) - 1)
		if l >= s.level {
			l++
		}
		s.level = l
		s.next += s.dwell()
	}
	v := s.Levels[s.level]
	if s.Noise > 0 {
		v += s.Noise * s.rng.NormFloat64()
	}
	return payload.NumberValue(round(v, s.Decimals))
}

// dwell returns a random time at one level, at least a millisecond.
func (s *Steps) dwell() time.Duration {
	if s.Every <= 0 {
		return time.Duration(math.MaxInt64 / 2)
	}
	return max(time.Millisecond, time.Duration(s.rng.ExpFloat64()*float64(s.Every)))
}

// Anomaly adds anomalies to another waveform: now and then (on average
// every Every, a Poisson process) Magnitude is added to the wave's value
// for a time For (at least one sample), a spike when For is short and a
// plateau when it is long; a negative Magnitude makes dips. Non-numeric
// values pass through unchanged. Anomalies counts the anomalies started.
type Anomaly struct {
	Wave      Waveform
	Magnitude float64
	Every     time.Duration
	For       time.Duration
	Decimals  int
	rng       *rand.Rand
	last      time.Duration // t of the previous sample
	until     time.Duration // the current anomaly lasts until then
	active    bool
	Anomalies int
}

// Next implements Waveform.
func (a *Anomaly) Next(t time.Duration) payload.Value {
	if a.rng == nil {
		a.rng = rand.New(rand.NewPCG(rand.Uint64(), 4))
	}
	v := a.Wave.Next(t)
	dt := t - a.last
	a.last = t
	if a.active && t >= a.until {
		a.active = false
	}
	if !a.active && a.Every > 0 && dt > 0 && a.rng.Float64() < float64(dt)/float64(a.Every) {
		a.active, a.until = true, t+a.For
		a.Anomalies++
		if a.For <= 0 {
			a.until = t + 1 // this sample only
		}
	}
	if !a.active || v.Kind != payload.Number {
		return v
	}
	return payload.NumberValue(round(v.Num+a.Magnitude*(1+0.1*a.rng.NormFloat64()), a.Decimals))
}

// Constant is a fixed value.
type Constant struct{ Value float64 }

// Next implements Waveform.
func (c Constant) Next(time.Duration) payload.Value { return payload.NumberValue(c.Value) }
