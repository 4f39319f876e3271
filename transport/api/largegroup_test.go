package api_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/imsync/imsync/actors"
	"github.com/imsync/imsync/events"
	"github.com/imsync/imsync/transport/api"
)

// Defect P2-3 (actors, not fixed here): creating a group of the maximum
// size (100,000 members) through the API activates a user grain per
// member; when those grains passivate together, protoactor-go's disthash
// placement actor handles each Terminated with a linear scan of every
// activation (placementActor.pidToMeta), quadratic in all, while every
// grain activation of the process waits behind it in the same mailbox.
// Live, `imsync serve` answered sends to conversations whose grains were
// not active with code 7 after 15 s for more than 8 minutes (RSS 1.2 GB,
// one core busy in a protoactor mailbox) until restarted; a conversation
// kept active by traffic was not affected.
//
// Run with IMSYNC_HEAVY_TESTS=1 (IMSYNC_LARGE_GROUP=N for another size);
// it fails until grain activations by a group's creation stop growing the
// placement actor's table, or passivation stops scanning it.
func TestLargeGroupKeepsTheServiceResponsive(t *testing.T) {
	if os.Getenv("IMSYNC_HEAVY_TESTS") == "" {
		t.Skip("defect P2-3: a 100,000-member group stalls every grain lookup once its members' grains passivate (IMSYNC_HEAVY_TESTS=1 runs it)")
	}
	members := 99_999
	if n, err := strconv.Atoi(os.Getenv("IMSYNC_LARGE_GROUP")); err == nil {
		members = n
	}
	passivate := 5 * time.Second
	// The on-disk store, as `imsync serve` runs it: the members' grains
	// write their snapshots there when they passivate.
	store, err := events.Open(t.TempDir(), events.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	svc, err := actors.Start(actors.Config{Store: store, PassivateAfter: passivate})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	a, err := api.New(api.Config{Service: svc, Key: []byte(apiKey)})
	if err != nil {
		t.Fatal(err)
	}
	st := &stack{svc: svc, api: a}
	st.http = httptest.NewServer(a)
	t.Cleanup(st.http.Close)
	names := make([]string, members)
	for i := range names {
		names[i] = fmt.Sprintf("m%06d", i)
	}
	var big api.ConversationRef
	st.must(t, "POST", "/v1/groups", api.CreateGroupRequest{Creator: "boss", Name: "big", Members: names}, &big)
	st.must(t, "POST", "/v1/messages", api.SendRequest{Conversation: big.Conversation, Sender: "m000005", Text: "hello all"}, nil)
	// Through several passivation rounds, conversations that need new
	// grains (each send a new direct conversation: activations go through
	// the placement actor) keep taking messages.
	for i, end := 0, time.Now().Add(12*passivate); time.Now().Before(end); i++ {
		var sent api.Sent
		if status, e := st.call(t, "POST", "/v1/messages", api.SendRequest{ToUser: fmt.Sprint("peer", i), Sender: "ann", Text: fmt.Sprint("ping ", i), ClientMsgID: fmt.Sprint(i)}, &sent); status != http.StatusOK {
			t.Fatalf("send %d, %s after the group's creation: %d %+v", i, time.Since(end.Add(-12*passivate)).Round(time.Second), status, e)
		}
	}
}
