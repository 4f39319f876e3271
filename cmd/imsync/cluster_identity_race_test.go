//go:build race

package main

// identityRaceDetector: the tests run under the race detector.
const identityRaceDetector = true
