package transport_test

import (
	"strings"
	"testing"
	"time"

	"github.com/imsync/imsync/transport"
	"github.com/imsync/imsync/transport/client"
)

// TestSearchRefusals: bad search input is refused as INVALID before
// anything runs, and a server without a search index answers UNAVAILABLE.
// (Searches themselves run in cmd/imsync's tests, on the live index.)
func TestSearchRefusals(t *testing.T) {
	ts := startServer(t, transport.Config{})
	c := ts.dial(t, "ann", "phone", 0)
	now := time.Now()
	for _, q := range []client.SearchQuery{
		{},
		{Text: " \t"},
		{Text: strings.Repeat("w", transport.MaxSearchQuery+1)},
		{Text: "x", Limit: transport.MaxSearchLimit + 1},
		{Text: "x", Offset: transport.MaxSearchOffset + 1},
		{Text: "x", From: now, To: now},
		{Text: "x", From: now, To: now.Add(-time.Second)},
		{Text: "x", Limit: -1},
	} {
		if _, err := c.Search(ctx(t), q); client.CodeOf(err) != client.CodeInvalid {
			t.Errorf("search %.20q limit %d offset %d from %v to %v: %v, want INVALID", q.Text, q.Limit, q.Offset, q.From, q.To, err)
		}
	}
	if _, err := c.Search(ctx(t), client.SearchQuery{Text: "hello"}); client.CodeOf(err) != client.CodeUnavailable {
		t.Fatalf("search on a server without an index: %v, want UNAVAILABLE", err)
	}
}
