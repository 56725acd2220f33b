// Package storetest is the conformance suite every store backend runs.
package storetest
