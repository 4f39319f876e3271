//go:build race

package transport_test

// raceEnabled says the tests run under the race detector.
const raceEnabled = true
