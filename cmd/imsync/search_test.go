package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/imsync/imsync/actors"
	"github.com/imsync/imsync/events"
	"github.com/imsync/imsync/events/eventspb"
	"github.com/imsync/imsync/projections/search"
	"github.com/imsync/imsync/transport"
	"github.com/imsync/imsync/transport/client"
	"github.com/imsync/imsync/transport/wire"
)

// searchServer runs `imsync serve` (live search on) on a new data
// directory until the test ends; it returns the data directory, the
// address and a dialer for users.
func searchServer(t *testing.T) (data, addr string, dial func(user string) *client.Client, token func(user string) string) {
	t.Helper()
	data = filepath.Join(t.TempDir(), "data")
	addr, stop := serveOn(t, data)
	t.Cleanup(stop)
	tc := pinnedTLSOf(t, data)
	token = func(user string) string {
		t.Helper()
		out, err := runCmd(t, "token", "--data", data, "--user", user, "--device", "d")
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(out)
	}
	dial = func(user string) *client.Client {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		c, err := client.Dial(ctx, client.Config{Addr: addr, Token: token(user), TLS: tc, FromNewest: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	return data, addr, dial, token
}

type hitRef struct {
	Conv string
	Seq  uint64
}

func hitRefs(r *wire.SearchResult) []hitRef {
	var out []hitRef
	for _, h := range r.GetHits() {
		out = append(out, hitRef{h.Conversation, h.Seq})
	}
	sortRefs(out)
	return out
}

func sortRefs(refs []hitRef) {
	slices.SortFunc(refs, func(a, b hitRef) int {
		if c := strings.Compare(a.Conv, b.Conv); c != 0 {
			return c
		}
		return int(a.Seq) - int(b.Seq)
	})
}

// searchUntil asks until the hits are want (the index follows the store
// a moment later) and fails at the deadline.
func searchUntil(t *testing.T, c *client.Client, q client.SearchQuery, want []hitRef) *wire.SearchResult {
	t.Helper()
	want = slices.Clone(want)
	sortRefs(want)
	var got []hitRef
	for end := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		r, err := c.Search(context.Background(), q)
		if err != nil {
			t.Fatalf("search %+v: %v", q, err)
		}
		if got = hitRefs(r); slices.Equal(got, want) {
			return r
		}
		if time.Now().After(end) {
			t.Fatalf("search %+v: hits %v, want %v", q, got, want)
		}
	}
}

// TestSearchEndToEnd runs search through a real server and the client:
// hits come only from the caller's conversations (also right after a
// removal), recalled messages are gone, edits are found by their new text
// only, filters narrow the hits, bad queries are refused, pages fit a
// frame; then the CLI prints hits, and a replay rebuilds the same index.
func TestSearchEndToEnd(t *testing.T) {
	data, addr, dial, token := searchServer(t)
	ctx := context.Background()
	ann, bob, cat := dial("ann"), dial("bob"), dial("cat")

	g, err := ann.CreateGroup(ctx, "", "launch team", []string{"bob"})
	if err != nil {
		t.Fatal(err)
	}
	sendText := func(c *client.Client, conv, to, text string) *wire.Sent {
		t.Helper()
		s, err := c.Send(ctx, client.Message{Conversation: conv, To: to, ClientMsgID: uuid.NewString(), Text: text})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	s1 := sendText(ann, g, "", "launch plan alpha").Seq
	s2 := sendText(bob, g, "", "launch checklist").Seq
	s3 := sendText(ann, g, "", "secret budget numbers").Seq
	dm := sendText(ann, "", "cat", "launch party tonight")

	// Membership: each sees the hits of their own conversations only.
	searchUntil(t, bob, client.SearchQuery{Text: "launch"}, []hitRef{{g, s1}, {g, s2}})
	searchUntil(t, cat, client.SearchQuery{Text: "launch"}, []hitRef{{dm.Conversation, dm.Seq}})
	searchUntil(t, ann, client.SearchQuery{Text: "launch"}, []hitRef{{dm.Conversation, dm.Seq}, {g, s1}, {g, s2}})
	if _, err := cat.Search(ctx, client.SearchQuery{Text: "launch", Conversation: g}); client.CodeOf(err) != client.CodeNotFound {
		t.Fatalf("a non-member searching a conversation: %v, want not found", err)
	}
	if r, err := cat.Search(ctx, client.SearchQuery{Text: "secret"}); err != nil || len(r.Hits) != 0 {
		t.Fatalf("cat found another conversation's message: %v %v", r, err)
	}

	// Filters.
	searchUntil(t, ann, client.SearchQuery{Text: "launch", Conversation: g}, []hitRef{{g, s1}, {g, s2}})
	searchUntil(t, ann, client.SearchQuery{Text: "launch", Sender: "bob"}, []hitRef{{g, s2}})
	searchUntil(t, ann, client.SearchQuery{Text: "launch plan"}, []hitRef{{g, s1}})
	searchUntil(t, ann, client.SearchQuery{Text: "launch", Kind: "poll"}, nil)
	searchUntil(t, ann, client.SearchQuery{Text: "launch", To: time.Now().Add(-time.Hour)}, nil)
	searchUntil(t, ann, client.SearchQuery{Text: "launch", From: time.Now().Add(-time.Hour), To: time.Now().Add(time.Hour)},
		[]hitRef{{dm.Conversation, dm.Seq}, {g, s1}, {g, s2}})

	// Edit and recall.
	if _, err := ann.Edit(ctx, g, s1, []byte("liftoff plan alpha")); err != nil {
		t.Fatal(err)
	}
	if _, err := ann.Recall(ctx, g, s3); err != nil {
		t.Fatal(err)
	}
	r := searchUntil(t, bob, client.SearchQuery{Text: "liftoff"}, []hitRef{{g, s1}})
	if h := r.Hits[0]; h.Text != "liftoff plan alpha" || !h.Edited || h.Sender != "ann" {
		t.Fatalf("edited hit %+v", h)
	}
	searchUntil(t, bob, client.SearchQuery{Text: "launch"}, []hitRef{{g, s2}})
	searchUntil(t, bob, client.SearchQuery{Text: "secret"}, nil)

	// Removed: no hit of the group from the moment the removal is acked.
	if _, err := ann.RemoveMember(ctx, g, "bob"); err != nil {
		t.Fatal(err)
	}
	for _, q := range []client.SearchQuery{{Text: "launch"}, {Text: "liftoff"}} {
		r, err := bob.Search(ctx, q)
		if err != nil || len(r.Hits) != 0 {
			t.Fatalf("bob, removed, searching %q: %v %v", q.Text, hitRefs(r), err)
		}
	}
	if _, err := bob.Search(ctx, client.SearchQuery{Text: "launch", Conversation: g}); client.CodeOf(err) != client.CodeNotFound {
		t.Fatalf("removed member searching the group: %v, want not found", err)
	}

	// Bad input.
	for _, q := range []client.SearchQuery{
		{Text: " "},
		{Text: "launch", Limit: 101},
		{Text: "launch", Offset: 10_001},
		{Text: "launch", From: time.Now(), To: time.Now().Add(-time.Minute)},
		{Text: strings.Repeat("x", 1025)},
	} {
		if _, err := ann.Search(ctx, q); client.CodeOf(err) != client.CodeInvalid {
			t.Errorf("search %.40q limit %d offset %d: %v, want invalid", q.Text, q.Limit, q.Offset, err)
		}
	}

	// Pages fit a frame: 60 messages of 16 KiB do not fit one answer.
	big, err := ann.CreateGroup(ctx, "", "big", nil)
	if err != nil {
		t.Fatal(err)
	}
	const n = 60
	var want []hitRef
	for i := range n {
		text := fmt.Sprintf("bulky %02d %s", i, strings.Repeat("y", 16<<10-20))
		want = append(want, hitRef{big, sendText(ann, big, "", text).Seq})
	}
	sortRefs(want)
	var first *wire.SearchResult
	for end := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if first, err = ann.Search(ctx, client.SearchQuery{Text: "bulky", Limit: 100}); err != nil {
			t.Fatal(err)
		}
		if first.Total == n || time.Now().After(end) {
			break
		}
	}
	if first.Total != n || len(first.Hits) == 0 || len(first.Hits) >= n || !first.More || first.NextOffset != uint32(len(first.Hits)) {
		t.Fatalf("first page of %d large hits: %d hits, total %d, more %v, next %d", n, len(first.Hits), first.Total, first.More, first.NextOffset)
	}
	rest, err := ann.Search(ctx, client.SearchQuery{Text: "bulky", Limit: 100, Offset: int(first.NextOffset)})
	if err != nil {
		t.Fatal(err)
	}
	if got := hitRefs(&wire.SearchResult{Hits: append(first.Hits, rest.Hits...)}); !slices.Equal(got, want) || rest.More {
		t.Fatalf("two pages: %v (more %v), want %v", got, rest.More, want)
	}

	// The CLI: JSON lines, then a table.
	out, err := runCmd(t, "search", "--server", addr, "--token", token("ann"), "--ca", filepath.Join(data, "server.crt"), "--json", "--conv", g, "--from", "ann", "liftoff")
	if err != nil {
		t.Fatal(err)
	}
	got := lines(t, out)
	if len(got) != 1 || got[0]["conversation"] != g || got[0]["seq"] != float64(s1) || got[0]["sender"] != "ann" || got[0]["text"] != "liftoff plan alpha" {
		t.Fatalf("search --json printed %q", out)
	}
	out, err = runCmd(t, "search", "--server", addr, "--token", token("cat"), "--ca", filepath.Join(data, "server.crt"), "launch")
	if err != nil {
		t.Fatal(err)
	}
	rows := strings.Split(strings.TrimSpace(out), "\n")
	if len(rows) != 2 || !strings.HasPrefix(rows[0], "CONVERSATION") || !strings.Contains(rows[1], dm.Conversation) || !strings.HasSuffix(rows[1], "launch party tonight") {
		t.Fatalf("search printed:\n%s", out)
	}
	if _, err := runCmd(t, "search", "--server", addr, "--token", token("cat"), "--ca", filepath.Join(data, "server.crt")); err == nil {
		t.Fatal("search without a query ran")
	}
}

// TestSearchReplayRebuild stops a server whose live index followed the
// messages and rebuilds the index with `imsync replay --projection
// search --rebuild`: the same messages are found, from the same data
// directory's index.
func TestSearchReplayRebuild(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	addr, stop := serveOn(t, data)
	tok, err := runCmd(t, "token", "--data", data, "--user", "ann", "--device", "d")
	if err != nil {
		t.Fatal(err)
	}
	cli := func(args ...string) string {
		t.Helper()
		full := append([]string{args[0], "--server", addr, "--token", strings.TrimSpace(tok), "--ca", filepath.Join(data, "server.crt"), "--json"}, args[1:]...)
		out, err := runCmd(t, full...)
		if err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		return out
	}
	for i := range 5 {
		cli("send", "--to", "bob", fmt.Sprintf("harbour note %d", i))
	}
	seq := uint64(lines(t, cli("send", "--to", "bob", "harbour recalled"))[0]["seq"].(float64))
	conv := lines(t, cli("send", "--to", "bob", "harbour last"))[0]["conversation"].(string)
	cli("recall", "--conv", conv, "--seq", fmt.Sprint(seq))
	for end := time.Now().Add(20 * time.Second); len(lines(t, cli("search", "--limit", "100", "harbour"))) != 6; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("live search never found the 6 messages: %s", cli("search", "harbour"))
		}
	}
	stop()

	var res bytes.Buffer
	if err := run(context.Background(), []string{"replay", "--data", data, "--store", storeFor(t, data), "--projection", "search", "--rebuild"}, &res); err != nil {
		t.Fatal(err)
	}
	if rr := lines1(t, res.String()); rr["projection"] != "search" || rr["events"].(float64) < 8 {
		t.Fatalf("replay printed %s", res.String())
	}
	x, err := search.Open(searchDir(data))
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	r, err := x.Search(context.Background(), search.Query{Text: "harbour", Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Hits) != 6 {
		t.Fatalf("rebuilt index found %d messages, want 6", len(r.Hits))
	}
	for _, h := range r.Hits {
		if h.Seq == seq {
			t.Fatalf("rebuilt index holds the recalled message %+v", h)
		}
	}
}

// TestSearchConfirmsMembershipWithTheConversation gives bob a
// conversation list line for a group he is not a member of (as a list
// that has not yet learnt of a removal holds): the group's hits must still
// not reach him, because the conversation itself decides.
func TestSearchConfirmsMembershipWithTheConversation(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	st, err := startStack(data, storeFor(t, data), "127.0.0.1:0", nil, transport.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.close()
	if err := st.search.start(data, st.store, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	secret, err := st.svc.CreateGroup(ctx, "", "ann", "ann only", nil)
	if err != nil {
		t.Fatal(err)
	}
	seqs := map[string]uint64{}
	sendMemo := func(conv string) {
		r, err := st.svc.Send(ctx, actors.SendRequest{Conversation: conv, Sender: "ann", Device: "d", ClientMsgID: uuid.NewString(), Kind: "text", Body: []byte("classified memo")})
		if err != nil {
			t.Fatal(err)
		}
		seqs[conv] = r.Seq
	}
	sendMemo(secret)
	// bob's list line for the secret group, without his membership,
	// written before his user grain first starts (it loads it then).
	line, err := events.Encode(uuid.New(), &eventspb.MembershipChanged{ConversationId: secret, Seq: 1, User: "bob", Added: true, By: "ann", Kind: eventspb.ConversationKind_GROUP, Name: "ann only"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.store.AppendToStream(ctx, events.InboxStream("bob"), events.Any, line); err != nil {
		t.Fatal(err)
	}
	shared, err := st.svc.CreateGroup(ctx, "", "ann", "shared", []string{"bob"})
	if err != nil {
		t.Fatal(err)
	}
	sendMemo(shared)
	for end := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		list, err := st.svc.Conversations(ctx, "bob")
		if err != nil {
			t.Fatal(err)
		}
		if len(list.Conversations) == 2 {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("bob's list: %v", list)
		}
	}

	tc := pinnedTLSOf(t, data)
	key, err := transport.LoadKey(data)
	if err != nil {
		t.Fatal(err)
	}
	dial := func(user string) *client.Client {
		tok, err := key.Mint(user, "d", time.Hour, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		c, err := client.Dial(ctx, client.Config{Addr: st.srv.Addr().String(), Token: tok, TLS: tc, FromNewest: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	ann, bob := dial("ann"), dial("bob")
	searchUntil(t, ann, client.SearchQuery{Text: "classified"}, []hitRef{{secret, seqs[secret]}, {shared, seqs[shared]}})
	searchUntil(t, bob, client.SearchQuery{Text: "classified"}, []hitRef{{shared, seqs[shared]}})
	if _, err := bob.Search(ctx, client.SearchQuery{Text: "classified", Conversation: secret}); client.CodeOf(err) != client.CodeNotFound {
		t.Fatalf("bob searching the secret group: %v, want not found", err)
	}
}

// serveOn runs `imsync serve` on data with more flags; stop ends it.
func serveOn(t *testing.T, data string, more ...string) (addr string, stop func()) {
	t.Helper()
	addr, _, stopServe := serveInProcess(t, serveArgs(t, data, append([]string{"--listen", "127.0.0.1:0"}, more...)...)...)
	return addr, func() {
		if err := stopServe(); err != nil {
			t.Errorf("serve: %v", err)
		}
	}
}

// TestSearchCatchesUpAtStart: messages sent while the server ran without
// search (--search=false) are found once it runs with it: the index
// resumes from its checkpoint and catches up at start.
func TestSearchCatchesUpAtStart(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	ca := filepath.Join(data, "server.crt")
	addr, stop := serveOn(t, data)
	tok, err := runCmd(t, "token", "--data", data, "--user", "ann", "--device", "d")
	if err != nil {
		t.Fatal(err)
	}
	cli := func(addr string, args ...string) (string, error) {
		full := append([]string{args[0], "--server", addr, "--token", strings.TrimSpace(tok), "--ca", ca, "--json"}, args[1:]...)
		return runCmd(t, full...)
	}
	count := func(addr, word string) int {
		out, err := cli(addr, "search", "--limit", "100", word)
		if err != nil {
			t.Fatal(err)
		}
		return len(lines(t, out))
	}
	waitFor := func(addr, word string, n int) {
		t.Helper()
		for end := time.Now().Add(20 * time.Second); count(addr, word) != n; time.Sleep(20 * time.Millisecond) {
			if time.Now().After(end) {
				t.Fatalf("search %q: %d hits, want %d", word, count(addr, word), n)
			}
		}
	}
	if _, err := cli(addr, "send", "--to", "bob", "before the pause"); err != nil {
		t.Fatal(err)
	}
	waitFor(addr, "pause", 1)
	stop()

	addr, stop = serveOn(t, data, "--search=false")
	for i := range 3 {
		if _, err := cli(addr, "send", "--to", "bob", fmt.Sprintf("during the pause %d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cli(addr, "search", "pause"); err == nil || !strings.Contains(err.Error(), "not enabled") {
		t.Fatalf("search on a server without it: %v", err)
	}
	stop()

	addr, stop = serveOn(t, data)
	defer stop()
	waitFor(addr, "pause", 4)
	waitFor(addr, "during", 3)
}
