package fhtest

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestInfluxDB starts the shared server, creates a database, writes a
// point and reads it back; then halts and resumes a private server.
func TestInfluxDB(t *testing.T) {
	s := InfluxDB(t)
	if InfluxDB(t) != s {
		t.Fatal("InfluxDB(t) returned two servers")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := s.Query(ctx, "", "CREATE DATABASE fhtest"); err != nil {
		t.Fatal(err)
	}
	out, err := s.Query(ctx, "fhtest", "SHOW MEASUREMENTS")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), `"error"`) {
		t.Fatalf("SHOW MEASUREMENTS: %s", out)
	}
}

func TestInfluxDBHaltResume(t *testing.T) {
	InfluxDB(t) // skips when influxd is missing
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := StartInfluxDB(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	if _, err := s.Query(ctx, "", "CREATE DATABASE kept"); err != nil {
		t.Fatal(err)
	}
	s.Halt()
	if _, err := s.Query(ctx, "", "SHOW DATABASES"); err == nil {
		t.Fatal("query succeeded on a halted server")
	}
	if err := s.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	out, err := s.Query(ctx, "", "SHOW DATABASES")
	if err != nil || !strings.Contains(string(out), `"kept"`) {
		t.Fatalf("SHOW DATABASES after Resume = %s, %v; want kept", out, err)
	}
}
