package payload

import "math"

// The accepted time window, in Unix nanoseconds: after the epoch, up to the
// largest int64.
const (
	minTS = 1
	maxTS = math.MaxInt64
)

// parseTime parses an RFC 3339 time, or one without an offset read as UTC:
//
//	YYYY-MM-DD('T'|'t'|' ')hh:mm:ss[.fraction of 1..9 digits][('Z'|'z'|±hh:mm)]
//
// It returns Unix nanoseconds, and false when s has another shape, a field
// out of range (including leap second 60) or a time outside the window.
func parseTime(s []byte) (int64, bool) {
	if len(s) < 19 || s[4] != '-' || s[7] != '-' || s[13] != ':' || s[16] != ':' ||
		(s[10] != 'T' && s[10] != 't' && s[10] != ' ') {
		return 0, false
	}
	year, ok1 := digits(s[0:4])
	month, ok2 := digits(s[5:7])
	day, ok3 := digits(s[8:10])
	hour, ok4 := digits(s[11:13])
	min, ok5 := digits(s[14:16])
	sec, ok6 := digits(s[17:19])
	if !ok1 || !ok2 || !ok3 || !ok4 || !ok5 || !ok6 ||
		month < 1 || month > 12 || day < 1 || day > daysIn(year, month) ||
		hour > 23 || min > 59 || sec > 59 {
		return 0, false
	}
	s = s[19:]
	var frac int64
	if len(s) > 0 && s[0] == '.' {
		n := 1
		for n < len(s) && s[n] >= '0' && s[n] <= '9' {
			n++
		}
		if n == 1 || n > 10 {
			return 0, false
		}
		f, _ := digits(s[1:n])
		for range 10 - n {
			f *= 10
		}
		frac = f
		s = s[n:]
	}
	var offset int64 // seconds east of UTC
	switch {
	case len(s) == 0:
	case len(s) == 1 && (s[0] == 'Z' || s[0] == 'z'):
	case len(s) == 6 && (s[0] == '+' || s[0] == '-') && s[3] == ':':
		oh, ok1 := digits(s[1:3])
		om, ok2 := digits(s[4:6])
		if !ok1 || !ok2 || oh > 23 || om > 59 {
			return 0, false
		}
		offset = oh*3600 + om*60
		if s[0] == '-' {
			offset = -offset
		}
	default:
		return 0, false
	}
	secs := daysFromCivil(year, month, day)*86400 + hour*3600 + min*60 + sec - offset
	return fromSeconds(secs, frac)
}

// fromSeconds returns secs seconds plus frac nanoseconds after the epoch,
// and whether that lies in the window.
func fromSeconds(secs, frac int64) (int64, bool) {
	if secs < 0 || secs > maxTS/1_000_000_000 {
		return 0, false
	}
	ns := secs * 1e9
	if ns > maxTS-frac {
		return 0, false
	}
	ns += frac
	return ns, ns >= minTS
}

// digits parses a short run of decimal digits.
func digits(b []byte) (int64, bool) {
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

func daysIn(year, month int64) int64 {
	switch month {
	case 2:
		if year%4 == 0 && (year%100 != 0 || year%400 == 0) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	}
	return 31
}

// daysFromCivil returns the days from 1970-01-01 to a proleptic Gregorian
// date (Howard Hinnant's algorithm).
func daysFromCivil(y, m, d int64) int64 {
	if m <= 2 {
		y--
	}
	era := y / 400 // y ≥ -1 here, and only y = -1 is negative: era 0 is right for it too
	if y < 0 {
		era = -1
	}
	yoe := y - era*400
	mp := (m + 9) % 12
	doy := (153*mp+2)/5 + d - 1
	doe := yoe*365 + yoe/4 - yoe/100 + doy
	return era*146097 + doe - 719468
}

// epochMillis converts a JSON number literal of Unix milliseconds (shape
// from scanNumber) to Unix nanoseconds, exactly: in decimal, not through
// float64, so that 1.795773600123e12 is …123 ms to the nanosecond. Digits
// below the nanosecond are dropped.
func epochMillis(lit []byte, shape int) (int64, bool) {
	if shape&numNeg != 0 {
		return 0, false
	}
	// lit = mantissa digits (with an optional '.') [eE exponent]. Gather the
	// significant digits and the power of ten that scales them to ns.
	var sig []byte // significant digits, a sub-slice of a stack buffer
	var buf [20]byte
	scale := 6 // ms → ns
	afterPoint := false
	i := 0
	for ; i < len(lit) && lit[i] != 'e' && lit[i] != 'E'; i++ {
		c := lit[i]
		switch {
		case c == '.':
			afterPoint = true
		case c == '0' && len(sig) == 0:
			if afterPoint {
				scale--
			}
		default:
			if len(sig) < len(buf) {
				sig = append(buf[:len(sig)], c)
				if afterPoint {
					scale--
				}
			} else if !afterPoint {
				scale++ // an integer digit beyond what we keep
			}
		}
	}
	if i < len(lit) {
		i++
		neg := lit[i] == '-'
		if lit[i] == '+' || lit[i] == '-' {
			i++
		}
		e := 0
		for ; i < len(lit); i++ {
			if e < 1e6 {
				e = e*10 + int(lit[i]-'0')
			}
		}
		if neg {
			e = -e
		}
		scale += e
	}
	// ns = sig × 10^scale, truncated.
	if scale < 0 {
		if -scale >= len(sig) {
			return 0, false // below a nanosecond, or zero
		}
		sig = sig[:len(sig)+scale]
		scale = 0
	}
	if len(sig) == 0 || len(sig)+scale > 19 {
		return 0, false
	}
	var n uint64
	for _, c := range sig {
		n = n*10 + uint64(c-'0')
	}
	for range scale {
		n *= 10
	}
	if n > maxTS {
		return 0, false
	}
	return int64(n), n >= minTS
}

// senmlNanos converts an absolute SenML time in seconds to Unix nanoseconds,
// keeping the fraction's precision by converting the whole seconds apart.
func senmlNanos(sec float64) (int64, bool) {
	if !(sec >= 0) || sec >= 1<<63/1e9+1 {
		return 0, false
	}
	whole := math.Floor(sec)
	return fromSeconds(int64(whole), int64(math.Round((sec-whole)*1e9)))
}
