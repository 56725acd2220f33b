//go:build race

package payload

// raceEnabled: the race detector drops pooled objects at random, so
// allocation counts are meaningless.
const raceEnabled = true
