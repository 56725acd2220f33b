//go:build !unix

package cli

// checkDescriptors has no descriptor limit to check here; the dials will
// say when the fleet is too big.
func checkDescriptors(int) error { return nil }
