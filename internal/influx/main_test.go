package influx

import (
	"testing"

	"github.com/fieldhub/fieldhub/internal/fhtest"
)

func TestMain(m *testing.M) { fhtest.Main(m) }
