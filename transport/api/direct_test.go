package api_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/imsync/imsync/transport/api"
)

// TestRefusedSendToUserCreatesNothing: the first message to a user
// creates the direct conversation together with the message, so a send
// the rules refuse changes nothing ("bad input gets a clear error and
// changes nothing"): no conversation, nothing in either user's list; the
// first accepted send then creates it with its message.
func TestRefusedSendToUserCreatesNothing(t *testing.T) {
	st := start(t)
	for name, q := range map[string]api.SendRequest{
		"body too large": {ToUser: "zed", Sender: "amy", Text: strings.Repeat("x", 17<<10)},
		"kind too long":  {ToUser: "zed", Sender: "amy", Text: "x", Kind: strings.Repeat("k", 200)},
		"reply to none":  {ToUser: "zed", Sender: "amy", Text: "x", ReplyTo: 42},
	} {
		if status, _ := st.call(t, "POST", "/v1/messages", q, nil); status == http.StatusOK {
			t.Fatalf("%s: accepted", name)
		}
		if status, e := st.call(t, "GET", "/v1/conversations/dm-amy~zed?reader=amy", nil, nil); status != http.StatusNotFound {
			t.Fatalf("after a refused send (%s) the direct conversation exists: %d %+v", name, status, e)
		}
		for _, u := range []string{"amy", "zed"} {
			var l api.ConversationList
			st.must(t, "GET", "/v1/users/"+u+"/conversations", nil, &l)
			if len(l.Conversations) != 0 || l.UserSeq != 0 {
				t.Fatalf("after a refused send (%s) %s's list holds %+v", name, u, l)
			}
		}
	}
	// The first accepted send creates the conversation with its message;
	// a retry with the same client id gets the same answer.
	q := api.SendRequest{ToUser: "zed", Sender: "amy", Text: "hi", ClientMsgID: "c1"}
	var first, again api.Sent
	st.must(t, "POST", "/v1/messages", q, &first)
	st.must(t, "POST", "/v1/messages", q, &again)
	if first.Conversation != "dm-amy~zed" || first.Seq != 2 || first.Duplicate || again.Seq != first.Seq || !again.Duplicate {
		t.Fatalf("first send %+v, retry %+v", first, again)
	}
	var h api.History
	st.must(t, "GET", "/v1/conversations/dm-amy~zed/messages?reader=zed", nil, &h)
	if len(h.Messages) != 1 || h.Messages[0].Seq != 2 || *h.Messages[0].Text != "hi" {
		t.Fatalf("history after the first send: %+v", h)
	}
}
