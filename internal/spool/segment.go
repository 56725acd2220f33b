package spool

import (
	"fmt"
	"strconv"
	"strings"
)

// idRun is a range [first, last] of consecutive record IDs.
type idRun struct{ first, last uint64 }

func (r idRun) len() int64 { return int64(r.last - r.first + 1) }

// segment is what the spool keeps in memory about a segment file: a few
// numbers, not an index of its records.
type segment struct {
	seq       uint64
	name      string // path
	base      uint64 // every record has an ID >= base
	start     int64  // offset of the first record
	size      int64  // durable bytes (header and whole records)
	count     int64  // records
	runs      []idRun
	firstTime int64 // Unix nanoseconds of the first and last record
	lastTime  int64
	encrypted bool   // records written with the key
	sealed    bool   // never appended to again (damaged header, failed write)
	damaged   []span // damaged ranges already counted; Read skips them
}

// damageAt returns the known damaged range starting at off.
func (g *segment) damageAt(off int64) (span, bool) {
	for _, d := range g.damaged {
		if int64(d.from) == off {
			return d, true
		}
	}
	return span{}, false
}

func segName(seq uint64) string { return fmt.Sprintf("%016x.seg", seq) }

func parseSegName(name string) (uint64, bool) {
	hex, ok := strings.CutSuffix(name, ".seg")
	if !ok || len(hex) != 16 {
		return 0, false
	}
	seq, err := strconv.ParseUint(hex, 16, 64)
	return seq, err == nil
}

// addRange records IDs first..last (ascending, above every ID present).
func (g *segment) addRange(first, last uint64) {
	if n := len(g.runs); n > 0 && g.runs[n-1].last+1 == first {
		g.runs[n-1].last = last
	} else {
		g.runs = append(g.runs, idRun{first, last})
	}
	g.count += int64(last - first + 1)
}

func (g *segment) firstID() uint64 {
	if len(g.runs) == 0 {
		return 0
	}
	return g.runs[0].first
}

func (g *segment) lastID() uint64 {
	if len(g.runs) == 0 {
		return 0
	}
	return g.runs[len(g.runs)-1].last
}

// countIn returns how many records have lo < ID <= hi.
func (g *segment) countIn(lo, hi uint64) int64 {
	return countRuns(g.runs, lo, hi)
}

func countRuns(runs []idRun, lo, hi uint64) int64 {
	var n int64
	for _, r := range runs {
		if c, ok := clipRun(r, lo, hi); ok {
			n += c.len()
		}
	}
	return n
}

// clipRun returns the part of r with lo < ID <= hi.
func clipRun(r idRun, lo, hi uint64) (idRun, bool) {
	if r.last <= lo || r.first > hi {
		return idRun{}, false
	}
	return idRun{max(r.first, lo+1), min(r.last, hi)}, true
}
