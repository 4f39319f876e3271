package api_test

import (
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/imsync/imsync/transport/api"
)

// raw makes a request with the API key and returns the answer's status,
// Allow header and error body.
func (st *stack) raw(t *testing.T, method, path string) (int, string, api.Error) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx(t), method, st.http.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+apiKey)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	var e api.Error
	if method != http.MethodHead && res.StatusCode != http.StatusOK {
		if err := json.Unmarshal(b, &e); err != nil || e.Code == 0 {
			t.Fatalf("%s %s: status %d with body %q: not an API error", method, path, res.StatusCode, b)
		}
	}
	return res.StatusCode, res.Header.Get("Allow"), e
}

// TestWrongMethodAnswers405: a known path asked with a method it does not
// serve answers 405 with the methods it does in Allow (RFC 9110), in the
// API's error format; an unknown path is still 404.
func TestWrongMethodAnswers405(t *testing.T) {
	st := start(t)
	for _, c := range []struct{ method, path, allow string }{
		{"GET", "/v1/messages", "POST"},
		{"DELETE", "/v1/messages", "POST"},
		{"PUT", "/v1/groups", "POST"},
		{"POST", "/v1/conversations/g1", "GET, HEAD"},
		{"DELETE", "/v1/conversations/g1/members", "POST"},
		{"GET", "/v1/conversations/g1/members/bob", "DELETE"},
		{"POST", "/v1/conversations/g1/messages", "GET, HEAD"},
		{"GET", "/v1/conversations/g1/messages/3", "PATCH"},
		{"PATCH", "/v1/conversations/g1/messages/3/recall", "POST"},
		{"POST", "/v1/users/ann/conversations", "GET, HEAD"},
		{"DELETE", "/v1/users/ann/devices/phone", "GET, HEAD"},
		{"GET", "/v1/users/ann/revoke-tokens", "POST"},
		{"POST", "/openapi.json", "GET, HEAD"},
	} {
		status, allow, e := st.raw(t, c.method, c.path)
		if status != http.StatusMethodNotAllowed || allow != c.allow || !strings.Contains(e.Error, c.method+" is not allowed") {
			t.Errorf("%s %s: %d, Allow %q, %+v; want 405 with Allow %q", c.method, c.path, status, allow, e, c.allow)
		}
	}
	// Every route: any other method is 405 naming the route's.
	for _, r := range st.api.Routes() {
		method, path, _ := strings.Cut(r, " ")
		path = strings.NewReplacer("{conversation}", "g1", "{user}", "ann", "{device}", "phone", "{seq}", "3").Replace(path)
		for _, other := range []string{"GET", "POST", "PUT", "PATCH", "DELETE"} {
			if other == method {
				continue
			}
			status, allow, _ := st.raw(t, other, path)
			if status != http.StatusMethodNotAllowed || !slices.Contains(strings.Split(allow, ", "), method) {
				t.Errorf("%s %s (route %s): %d, Allow %q", other, path, r, status, allow)
			}
		}
	}
	for _, path := range []string{"/v1/nothing", "/v1/conversations/g1/messages/3/forward", "/v2/messages"} {
		if status, allow, _ := st.raw(t, "GET", path); status != http.StatusNotFound || allow != "" {
			t.Errorf("GET %s: %d, Allow %q; want 404", path, status, allow)
		}
	}
}

// TestEditAndRecallMessages: the app backend edits and recalls messages
// as the wire protocol's edit and recall do, with the same rights.
func TestEditAndRecallMessages(t *testing.T) {
	st := start(t)
	var g api.ConversationRef
	st.must(t, "POST", "/v1/groups", api.CreateGroupRequest{ID: "team", Creator: "ann", Name: "team", Members: []string{"bob", "cat"}}, &g)
	var sent api.Sent
	st.must(t, "POST", "/v1/messages", api.SendRequest{Conversation: "team", Sender: "bob", Text: "helo"}, &sent)
	msg := "/v1/conversations/team/messages/" + strconv.FormatUint(sent.Seq, 10)

	var edited api.Done
	st.must(t, "PATCH", msg, api.EditRequest{Actor: "bob", Text: "hello"}, &edited)
	if edited.Seq != sent.Seq+1 {
		t.Fatalf("edit answered %+v after the message at %d", edited, sent.Seq)
	}
	var h api.History
	st.must(t, "GET", "/v1/conversations/team/messages?reader=cat", nil, &h)
	if len(h.Messages) != 1 || *h.Messages[0].Text != "hello" || !h.Messages[0].Edited {
		t.Fatalf("history after the edit: %+v", h.Messages)
	}

	for name, c := range map[string]struct {
		path   string
		body   any
		status int
	}{
		"by another member":    {msg, api.EditRequest{Actor: "cat", Text: "x"}, http.StatusForbidden},
		"by a stranger":        {msg, api.EditRequest{Actor: "eve", Text: "x"}, http.StatusNotFound},
		"without an actor":     {msg, api.EditRequest{Text: "x"}, http.StatusBadRequest},
		"without a body":       {msg, api.EditRequest{Actor: "bob"}, http.StatusBadRequest},
		"text and body":        {msg, api.EditRequest{Actor: "bob", Text: "x", Body: []byte("y")}, http.StatusBadRequest},
		"unknown field":        {msg, map[string]string{"actor": "bob", "txt": "x"}, http.StatusBadRequest},
		"seq not a number":     {"/v1/conversations/team/messages/abc", api.EditRequest{Actor: "bob", Text: "x"}, http.StatusBadRequest},
		"seq 0":                {"/v1/conversations/team/messages/0", api.EditRequest{Actor: "bob", Text: "x"}, http.StatusBadRequest},
		"not a message":        {"/v1/conversations/team/messages/1", api.EditRequest{Actor: "ann", Text: "x"}, http.StatusBadRequest},
		"unknown conversation": {"/v1/conversations/nope/messages/2", api.EditRequest{Actor: "bob", Text: "x"}, http.StatusNotFound},
	} {
		if status, e := st.call(t, "PATCH", c.path, c.body, nil); status != c.status {
			t.Errorf("edit %s: %d %+v, want %d", name, status, e, c.status)
		}
	}
	if status, e := st.call(t, "POST", msg+"/recall", api.RecallRequest{Actor: "cat"}, nil); status != http.StatusForbidden {
		t.Fatalf("recall by another member: %d %+v", status, e)
	}
	if status, e := st.call(t, "POST", msg+"/recall", api.RecallRequest{}, nil); status != http.StatusBadRequest {
		t.Fatalf("recall without an actor: %d %+v", status, e)
	}
	var recalled api.Done
	st.must(t, "POST", msg+"/recall", api.RecallRequest{Actor: "ann"}, &recalled) // an admin
	if recalled.Seq != edited.Seq+1 {
		t.Fatalf("recall answered %+v", recalled)
	}
	var again api.Done
	st.must(t, "POST", msg+"/recall", api.RecallRequest{Actor: "bob"}, &again)
	if again.Seq != recalled.Seq {
		t.Fatalf("a second recall answered %+v, the first %+v", again, recalled)
	}
	if status, e := st.call(t, "PATCH", msg, api.EditRequest{Actor: "bob", Text: "back"}, nil); status != http.StatusBadRequest {
		t.Fatalf("edit of a recalled message: %d %+v", status, e)
	}
	st.must(t, "GET", "/v1/conversations/team/messages?reader=bob", nil, &h)
	if len(h.Messages) != 1 || !h.Messages[0].Recalled || h.LastSeq != recalled.Seq {
		t.Fatalf("history after the recall: %+v", h)
	}
}
