package main

import (
	"testing"
	"time"
)

func TestRetentionFlag(t *testing.T) {
	for in, want := range map[string]time.Duration{"30d": 30 * 24 * time.Hour, "72h": 72 * time.Hour, "0": 0, "0d": 0} {
		var r retentionFlag
		if err := r.Set(in); err != nil || time.Duration(r) != want {
			t.Errorf("Set(%q) = %v, %v; want %v", in, time.Duration(r), err, want)
		}
	}
	for _, in := range []string{"", "x", "-1d", "-5h", "1.5d", "10ms"} {
		var r retentionFlag
		if err := r.Set(in); err == nil {
			t.Errorf("Set(%q) accepted: %v", in, time.Duration(r))
		}
	}
	r := retentionFlag(30 * 24 * time.Hour)
	if s := r.String(); s != "30d" {
		t.Errorf("String() = %q, want 30d", s)
	}
}
