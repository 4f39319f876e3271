//go:build !race

package actors_test

// raceEnabled says the tests run under the race detector.
const raceEnabled = false
