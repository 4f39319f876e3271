package actors

import (
	"errors"
	"testing"
)

// A system send (the server API's) needs no membership; the same send as
// a user does, and a system send to a conversation that does not exist is
// refused all the same.
func TestDecideSystemSend(t *testing.T) {
	s := group(t)
	if _, _, f := decideConv(s, send("bot", "b1", "hi"), t0, testLimits()); !errors.Is(f, ErrNotFound) {
		t.Fatalf("a non-member's send: %v", f)
	}
	m := send("bot", "b1", "hi")
	m.System = true
	w := apply(t, s, m, t0)
	if w.Duplicate || w.Seq != s.lastSeq {
		t.Fatalf("system send: %+v", w)
	}
	if s.isMember("bot") {
		t.Fatal("a system sender became a member")
	}
	if again := apply(t, s, m, t0); !again.Duplicate || again.Seq != w.Seq {
		t.Fatalf("a retried system send: %+v, first %+v", again, w)
	}
	if _, _, f := decideConv(newConvState("none"), m, t0, testLimits()); !errors.Is(f, ErrNotFound) {
		t.Fatalf("system send to a conversation that does not exist: %v", f)
	}
}
