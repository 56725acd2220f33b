package fhtest

import (
	"os/exec"
	"testing"
)

func TestMain(m *testing.M) { Main(m) }

// TestPostgres starts the shared server and creates two databases.
func TestPostgres(t *testing.T) {
	a, b := Postgres(t), Postgres(t)
	if a == b {
		t.Fatalf("two databases with one URL %s", a)
	}
	out, err := exec.Command("psql", a, "-Atc", "select 1").CombinedOutput()
	if err != nil || string(out) != "1\n" {
		t.Fatalf("psql %s: %v %q", a, err, out)
	}
}
