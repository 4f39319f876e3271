package teststore

import (
	"os"
	"strconv"
	"testing"
)

// BenchEventsEnv sets how many events a benchmark's store holds, for runs
// at production scale.
const BenchEventsEnv = "IMSYNC_BENCH_EVENTS"

// BenchEvents is the number of events a benchmark fills its store with:
// IMSYNC_BENCH_EVENTS, or def, small enough to keep CI's single pass short.
func BenchEvents(b testing.TB, def int) int {
	b.Helper()
	v := os.Getenv(BenchEventsEnv)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		b.Fatalf("%s=%q: want a positive number", BenchEventsEnv, v)
	}
	return n
}
