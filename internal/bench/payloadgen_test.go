package bench

import (
	"encoding/json"
	"testing"
	"time"
)

func TestPayloadJSON(t *testing.T) {
	g := newPayloadGen(FormatJSON, 3, 42)
	now := time.Date(2026, 3, 4, 5, 6, 7, 89_000_000, time.UTC)
	var buf []byte
	for seq := uint64(100); seq < 103; seq++ {
		buf = g.append(buf[:0], seq, now)
		var m struct {
			Seq  uint64             `json:"seq"`
			TS   string             `json:"ts"`
			Data map[string]float64 `json:"data"`
		}
		if err := json.Unmarshal(buf, &m); err != nil {
			t.Fatalf("payload %s: %v", buf, err)
		}
		if m.Seq != seq || m.TS != "2026-03-04T05:06:07.089Z" || len(m.Data) != 3 {
			t.Fatalf("payload %s: seq %d ts %q data %v", buf, m.Seq, m.TS, m.Data)
		}
		if v := m.Data["temperature"]; v < 15 || v > 27 {
			t.Errorf("temperature %v; want about 21", v)
		}
		if _, err := time.Parse(time.RFC3339Nano, m.TS); err != nil {
			t.Errorf("ts: %v", err)
		}
	}
}

func TestPayloadManyMetrics(t *testing.T) {
	g := newPayloadGen(FormatJSON, 12, 1)
	var m struct{ Data map[string]float64 }
	if err := json.Unmarshal(g.append(nil, 1, time.Now()), &m); err != nil || len(m.Data) != 12 {
		t.Fatalf("12 metrics: %v, %d metrics", err, len(m.Data))
	}
}

func TestPayloadSenML(t *testing.T) {
	g := newPayloadGen(FormatSenML, 3, 7)
	now := time.Unix(1767225600, 123_000_000)
	buf := g.append(nil, 1, now)
	var recs []struct {
		BT *float64 `json:"bt"`
		N  string   `json:"n"`
		U  string   `json:"u"`
		V  *float64 `json:"v"`
	}
	if err := json.Unmarshal(buf, &recs); err != nil {
		t.Fatalf("senml %s: %v", buf, err)
	}
	if len(recs) != 3 || recs[0].BT == nil || *recs[0].BT != 1767225600.123 || recs[0].N != "temperature" ||
		recs[0].U != "Cel" || recs[1].BT != nil || recs[2].V == nil {
		t.Fatalf("senml %s decoded as %+v", buf, recs)
	}
}

func BenchmarkPayloadJSON(b *testing.B) {
	g := newPayloadGen(FormatJSON, 3, 1)
	buf := make([]byte, 0, 256)
	now := time.Now()
	var seq uint64
	for b.Loop() {
		seq++
		buf = g.append(buf[:0], seq, now)
	}
}
