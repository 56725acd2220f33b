//go:build race

package device_test

// raceEnabled: the race detector makes TLS handshakes ten times slower.
const raceEnabled = true
