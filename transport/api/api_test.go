package api_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/imsync/imsync/actors"
	"github.com/imsync/imsync/events/eventspb"
	"github.com/imsync/imsync/transport"
	"github.com/imsync/imsync/transport/api"
	"github.com/imsync/imsync/transport/client"
	"github.com/imsync/imsync/transport/transporttest"
	"github.com/imsync/imsync/transport/wire"
)

const apiKey = "test-api-key-0123456789"

// stack is a real service, QUIC gateway and API on loopback ports.
type stack struct {
	svc     *actors.Service
	gateway *transport.Server
	api     *api.API
	http    *httptest.Server
	key     *transport.Key
	tls     *tls.Config
	dir     string
	now     time.Time // the gateway's clock: tests move it past revocations
}

func start(t *testing.T) *stack {
	t.Helper()
	dir := t.TempDir()
	svc := transporttest.Service(t, actors.Config{})
	revs, err := transport.LoadRevocations(dir)
	if err != nil {
		t.Fatal(err)
	}
	gw := transporttest.Listen(t, dir, transport.Config{Service: svc, Revocations: revs})
	a, err := api.New(api.Config{Service: svc, Gateway: gw.Server, Key: []byte(apiKey)})
	if err != nil {
		t.Fatal(err)
	}
	st := &stack{svc: svc, gateway: gw.Server, api: a, key: gw.Key, tls: gw.TLS, dir: dir}
	st.http = httptest.NewServer(a)
	t.Cleanup(st.http.Close)
	return st
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

// call makes a request with the API key and decodes the answer into out
// (when non-nil); it returns the status and the error body, if any.
func (st *stack) call(t *testing.T, method, path string, body any, out any) (int, api.Error) {
	t.Helper()
	return st.callKey(t, "Bearer "+apiKey, method, path, body, out)
}

func (st *stack) callKey(t *testing.T, auth, method, path string, body any, out any) (int, api.Error) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx(t), method, st.http.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	var e api.Error
	if res.StatusCode != http.StatusOK {
		if err := json.Unmarshal(b, &e); err != nil || e.Code == 0 {
			t.Fatalf("%s %s: status %d with body %q: not an API error", method, path, res.StatusCode, b)
		}
		return res.StatusCode, e
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %v in %s", method, path, err, b)
		}
	}
	return res.StatusCode, e
}

// must is call that fails the test unless the answer is 200.
func (st *stack) must(t *testing.T, method, path string, body any, out any) {
	t.Helper()
	if status, e := st.call(t, method, path, body, out); status != http.StatusOK {
		t.Fatalf("%s %s: %d %+v", method, path, status, e)
	}
}

func (st *stack) dial(t *testing.T, user, device string, issued time.Time, reconnect bool) (*client.Client, error) {
	t.Helper()
	tok, err := st.key.Mint(user, device, time.Hour, issued)
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.Dial(ctx(t), client.Config{Addr: st.gateway.Addr().String(), Token: tok, TLS: st.tls, NoReconnect: !reconnect})
	if err == nil {
		t.Cleanup(func() { c.Close() })
	}
	return c, err
}

// ended waits until the client stops for good and returns why.
func ended(t *testing.T, c *client.Client) error {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case _, ok := <-c.Entries():
			if !ok {
				return c.Err()
			}
		case <-deadline:
			t.Fatal("the client's connection was not closed")
		}
	}
}

func TestEveryEndpoint(t *testing.T) {
	st := start(t)
	var g api.ConversationRef
	st.must(t, "POST", "/v1/groups", api.CreateGroupRequest{ID: "trip", Creator: "ann", Name: "Trip", Members: []string{"bob"}}, &g)
	if g.Conversation != "trip" {
		t.Fatalf("group %q", g.Conversation)
	}
	var sent api.Sent
	st.must(t, "POST", "/v1/messages", api.SendRequest{Conversation: "trip", Sender: "ann", ClientMsgID: "m1", Text: "pack light"}, &sent)
	if sent.Seq == 0 || sent.Duplicate || sent.Conversation != "trip" {
		t.Fatalf("sent %+v", sent)
	}
	var again api.Sent
	st.must(t, "POST", "/v1/messages", api.SendRequest{Conversation: "trip", Sender: "ann", ClientMsgID: "m1", Text: "pack light"}, &again)
	if again.Seq != sent.Seq || !again.Duplicate {
		t.Fatalf("retry %+v, first %+v", again, sent)
	}
	var dm api.Sent
	st.must(t, "POST", "/v1/messages", api.SendRequest{ToUser: "cat", Sender: "bob", Body: []byte{0xff, 0x00}}, &dm)
	if dm.Conversation != actors.DirectID("bob", "cat") {
		t.Fatalf("direct message went to %q", dm.Conversation)
	}

	var added api.Done
	st.must(t, "POST", "/v1/conversations/trip/members", api.MemberRequest{Actor: "ann", User: "cat"}, &added)
	var info api.ConversationInfo
	st.must(t, "GET", "/v1/conversations/trip?reader=cat", nil, &info)
	if info.Kind != "group" || info.Name != "Trip" || !slices.Equal(info.Members, []string{"ann", "bob", "cat"}) || !slices.Equal(info.Admins, []string{"ann"}) || info.LastSeq != added.Seq {
		t.Fatalf("info %+v (member added at %d)", info, added.Seq)
	}
	var removed api.Done
	st.must(t, "DELETE", "/v1/conversations/trip/members/cat?actor=cat", nil, &removed)
	if removed.Seq != added.Seq+1 {
		t.Fatalf("removed at %d, added at %d", removed.Seq, added.Seq)
	}

	var h api.History
	st.must(t, "GET", "/v1/conversations/trip/messages?reader=bob&limit=10", nil, &h)
	if len(h.Messages) != 1 || h.Messages[0].Seq != sent.Seq || h.Messages[0].Text == nil || *h.Messages[0].Text != "pack light" || h.Messages[0].Sender != "ann" {
		t.Fatalf("history %+v", h)
	}
	h = api.History{}
	st.must(t, "GET", "/v1/conversations/"+dm.Conversation+"/messages?reader=cat&after=0&from_start=true", nil, &h)
	if len(h.Messages) != 1 || h.Messages[0].Text != nil || !bytes.Equal(h.Messages[0].Body, []byte{0xff, 0x00}) {
		t.Fatalf("binary body: %+v", h.Messages)
	}

	var list api.ConversationList
	waitFor(t, "bob's list to hold both conversations and his timeline", func() bool {
		st.must(t, "GET", "/v1/users/bob/conversations", nil, &list)
		return len(list.Conversations) == 2 && list.UserSeq != 0
	})
	var ids []string
	for _, c := range list.Conversations {
		ids = append(ids, c.Conversation)
	}
	slices.Sort(ids)
	if !slices.Equal(ids, []string{dm.Conversation, "trip"}) || list.UserSeq == 0 {
		t.Fatalf("bob's list %+v", list)
	}
	st.must(t, "GET", "/v1/users/bob/conversations?limit=1", nil, &list)
	if len(list.Conversations) != 1 || !list.More || list.NextCursor == "" {
		t.Fatalf("first page of one: %+v", list)
	}

	var dev api.Device
	st.must(t, "GET", "/v1/users/bob/devices/phone", nil, &dev)
	if dev.Online || dev.AckedUserSeq != 0 {
		t.Fatalf("a device never connected: %+v", dev)
	}
	// disconnect and revoke-tokens: see their own tests; here, with no
	// connection, they close nothing.
	var d api.Disconnected
	st.must(t, "POST", "/v1/users/bob/devices/phone/disconnect", nil, &d)
	var r api.Revoked
	st.must(t, "POST", "/v1/users/zed/revoke-tokens", nil, &r)
	if d.Closed != 0 || r.Closed != 0 || r.RevokedAt.IsZero() {
		t.Fatalf("disconnect %+v, revoke %+v", d, r)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestErrorsUseWireCodes(t *testing.T) {
	st := start(t)
	st.must(t, "POST", "/v1/groups", api.CreateGroupRequest{ID: "g", Creator: "ann", Name: "G", Members: []string{"bob"}}, nil)
	for _, c := range []struct {
		name, method, path string
		body               any
		status             int
		code               uint32
	}{
		{"unknown conversation", "GET", "/v1/conversations/nope/messages?reader=ann", nil, 404, 2},
		{"reader not a member", "GET", "/v1/conversations/g?reader=zed", nil, 404, 2},
		{"missing reader", "GET", "/v1/conversations/g/messages", nil, 400, 1},
		{"bad number", "GET", "/v1/conversations/g/messages?reader=ann&limit=-1", nil, 400, 1},
		{"unknown field", "POST", "/v1/groups", map[string]any{"creator": "ann", "name": "x", "members": []string{}, "colour": "red"}, 400, 1},
		{"text and body", "POST", "/v1/messages", map[string]any{"conversation": "g", "sender": "ann", "text": "a", "body": "YQ=="}, 400, 1},
		{"conversation and to_user", "POST", "/v1/messages", map[string]any{"conversation": "g", "to_user": "bob", "sender": "ann", "text": "a"}, 400, 1},
		{"not an admin", "POST", "/v1/conversations/g/members", api.MemberRequest{Actor: "bob", User: "cat"}, 403, 3},
		{"exists already", "POST", "/v1/groups", api.CreateGroupRequest{ID: "g", Creator: "bob", Name: "other", Members: []string{"cat"}}, 409, 4},
		{"body too large", "POST", "/v1/messages", api.SendRequest{Conversation: "g", Sender: "ann", Text: strings.Repeat("x", 17<<10)}, 413, 5},
		{"no such endpoint", "GET", "/v1/nothing", nil, 404, 101},
		{"wrong method", "DELETE", "/v1/groups", nil, 405, 101},
		{"bad device id", "POST", "/v1/users/bob/devices/a%20b/disconnect", nil, 400, 1},
	} {
		status, e := st.call(t, c.method, c.path, c.body, nil)
		if status != c.status || e.Code != c.code || e.Error == "" {
			t.Errorf("%s: %d %+v, want %d with code %d", c.name, status, e, c.status, c.code)
		}
	}
	// Nothing changed: g has one event per creation step and no message.
	var h api.History
	st.must(t, "GET", "/v1/conversations/g/messages?reader=ann", nil, &h)
	if len(h.Messages) != 0 {
		t.Fatalf("refused calls stored %d messages", len(h.Messages))
	}
}

func TestAuthRefusedWithoutOrWithAWrongKey(t *testing.T) {
	st := start(t)
	for _, auth := range []string{"", "Bearer ", "Bearer wrong-key-0123456789", "Bearer " + apiKey + "x", "Basic " + apiKey, apiKey} {
		for _, r := range st.api.Routes() {
			method, path, _ := strings.Cut(r, " ")
			if path == "/openapi.json" {
				continue
			}
			path = strings.NewReplacer("{conversation}", "g", "{user}", "bob", "{device}", "phone").Replace(path)
			status, e := st.callKey(t, auth, method, path, map[string]any{}, nil)
			if status != http.StatusUnauthorized || e.Code != wire.CodeUnauthorized {
				t.Errorf("%s with %q: %d %+v", r, auth, status, e)
			}
		}
	}
	// Nothing was created by the refused calls.
	if status, _ := st.call(t, "GET", "/v1/conversations/g?reader=bob", nil, nil); status != http.StatusNotFound {
		t.Fatalf("after refused calls: %d", status)
	}
	if _, err := api.New(api.Config{Service: st.svc, Key: []byte("short")}); err == nil {
		t.Fatal("a short key accepted")
	}
	if _, err := api.New(api.Config{Service: st.svc}); err == nil {
		t.Fatal("no key accepted")
	}
}

func TestSendAsUserNeedsMembershipSystemDoesNot(t *testing.T) {
	st := start(t)
	st.must(t, "POST", "/v1/groups", api.CreateGroupRequest{ID: "g", Creator: "ann", Name: "G", Members: []string{"bob"}}, nil)
	status, e := st.call(t, "POST", "/v1/messages", api.SendRequest{Conversation: "g", Sender: "zed", Text: "let me in"}, nil)
	if status != http.StatusNotFound || e.Code != uint32(actors.Code_NOT_FOUND) {
		t.Fatalf("a non-member's send: %d %+v", status, e)
	}
	bob, err := st.dial(t, "bob", "phone", time.Now(), true)
	if err != nil {
		t.Fatal(err)
	}
	var sent api.Sent
	st.must(t, "POST", "/v1/messages", api.SendRequest{Conversation: "g", Sender: "bot-weather", Text: "sunny", System: true}, &sent)
	// Bob's device receives it like any message.
	deadline := time.After(20 * time.Second)
	for {
		select {
		case en := <-bob.Entries():
			if p, ok := en.Message.(*eventspb.MessagePointer); ok && p.ConversationId == "g" && p.Seq == sent.Seq {
				if p.Sender != "bot-weather" {
					t.Fatalf("pointer from %q", p.Sender)
				}
				var h api.History
				st.must(t, "GET", "/v1/conversations/g/messages?reader=bob", nil, &h)
				if len(h.Messages) != 1 || h.Messages[0].Sender != "bot-weather" || *h.Messages[0].Text != "sunny" {
					t.Fatalf("history %+v", h.Messages)
				}
				// The bot is not a member for all that.
				var info api.ConversationInfo
				st.must(t, "GET", "/v1/conversations/g?reader=ann", nil, &info)
				if slices.Contains(info.Members, "bot-weather") {
					t.Fatal("a system sender became a member")
				}
				return
			}
		case <-deadline:
			t.Fatal("bob did not receive the system message")
		}
	}
}

func TestDisconnectClosesTheDevicesConnection(t *testing.T) {
	st := start(t)
	phone, err := st.dial(t, "bob", "phone", time.Now(), false)
	if err != nil {
		t.Fatal(err)
	}
	laptop, err := st.dial(t, "bob", "laptop", time.Now(), false)
	if err != nil {
		t.Fatal(err)
	}
	var dev api.Device
	st.must(t, "GET", "/v1/users/bob/devices/phone", nil, &dev)
	if !dev.Online || dev.User != "bob" || dev.Device != "phone" {
		t.Fatalf("device before the disconnect: %+v", dev)
	}
	var d api.Disconnected
	st.must(t, "POST", "/v1/users/bob/devices/phone/disconnect", nil, &d)
	if d.Closed != 1 {
		t.Fatalf("closed %d connections, want 1", d.Closed)
	}
	var app *quic.ApplicationError
	if err := ended(t, phone); !errors.As(err, &app) || app.ErrorCode != wire.CodeDisconnected {
		t.Fatalf("phone ended with %v, want code %d", err, wire.CodeDisconnected)
	}
	waitFor(t, "the phone offline", func() bool {
		st.must(t, "GET", "/v1/users/bob/devices/phone", nil, &dev)
		return !dev.Online
	})
	// The laptop is untouched, and the phone may log in again.
	if err := laptop.Err(); err != nil {
		t.Fatalf("laptop: %v", err)
	}
	if _, err := st.dial(t, "bob", "phone", time.Now(), false); err != nil {
		t.Fatalf("the phone cannot log in again: %v", err)
	}
}

func TestRevokeRefusesOldTokensAndClosesConnections(t *testing.T) {
	st := start(t)
	issued := time.Now()
	phone, err := st.dial(t, "bob", "phone", issued, true) // it would reconnect if it could
	if err != nil {
		t.Fatal(err)
	}
	ann, err := st.dial(t, "ann", "phone", issued, false)
	if err != nil {
		t.Fatal(err)
	}
	var r api.Revoked
	st.must(t, "POST", "/v1/users/bob/revoke-tokens", nil, &r)
	if r.Closed != 1 {
		t.Fatalf("closed %d connections, want 1", r.Closed)
	}
	var we *wire.Error
	if err := ended(t, phone); !errors.As(err, &we) || we.Code != wire.CodeUnauthorized {
		t.Fatalf("bob's phone ended with %v, want code 102", err)
	}
	if _, err := st.dial(t, "bob", "laptop", issued, false); !errors.As(err, &we) || we.Code != wire.CodeUnauthorized {
		t.Fatalf("a token issued before the revocation: %v", err)
	}
	if err := ann.Err(); err != nil {
		t.Fatalf("another user's connection: %v", err)
	}
	// A token issued after the revocation's second logs in.
	if _, err := st.dial(t, "bob", "phone", r.RevokedAt.Add(time.Second), false); err != nil {
		t.Fatalf("a token issued after the revocation: %v", err)
	}
	// Kept across a restart: the file in the data directory says so.
	revs, err := transport.LoadRevocations(st.dir)
	if err != nil {
		t.Fatal(err)
	}
	if !revs.Revoked("bob", issued) || revs.Revoked("bob", r.RevokedAt.Add(time.Second)) || revs.Revoked("ann", issued) {
		t.Fatal("the revocation is not what was saved")
	}
}

func TestOpenAPIDocumentMatchesTheRoutes(t *testing.T) {
	st := start(t)
	res, err := http.Get(st.http.URL + "/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	served, _ := io.ReadAll(res.Body)
	res.Body.Close()
	docs, err := os.ReadFile("../../docs/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(served, docs) || !bytes.Equal(served, api.OpenAPI) {
		t.Fatal("docs/openapi.json and transport/api/openapi.json differ: copy one over the other")
	}
	var doc struct {
		OpenAPI string                                `json:"openapi"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(served, &doc); err != nil || !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Fatalf("not an OpenAPI 3 document: %v", err)
	}
	var documented []string
	for path, ops := range doc.Paths {
		for method := range ops {
			documented = append(documented, strings.ToUpper(method)+" "+path)
		}
	}
	routes := st.api.Routes()
	slices.Sort(documented)
	slices.Sort(routes)
	if !slices.Equal(documented, routes) {
		t.Fatalf("documented %v\nrouted     %v", documented, routes)
	}
}

// The authentication scheme is case-insensitive (RFC 9110 §11.1): a
// client or proxy that writes "bearer" is not refused; the key itself is
// compared exactly.
func TestAuthSchemeIsCaseInsensitive(t *testing.T) {
	st := start(t)
	for _, scheme := range []string{"bearer", "BEARER", "Bearer"} {
		if status, e := st.callKey(t, scheme+" "+apiKey, "GET", "/v1/users/ann/conversations", nil, nil); status != http.StatusOK {
			t.Errorf("scheme %q: %d %+v", scheme, status, e)
		}
	}
	if status, _ := st.callKey(t, "Bearer "+strings.ToUpper(apiKey), "GET", "/v1/users/ann/conversations", nil, nil); status != http.StatusUnauthorized {
		t.Errorf("the key in upper case: %d, want 401", status)
	}
}

// A send's device is an id like any other: a control character or a
// space in it is refused and nothing is stored.
func TestSendRefusesABadDevice(t *testing.T) {
	st := start(t)
	st.must(t, "POST", "/v1/groups", api.CreateGroupRequest{ID: "g", Creator: "ann", Name: "G", Members: []string{"bob"}}, nil)
	for _, device := range []string{"x\n\u001b[31mEVIL\u0000", "a b", "..", strings.Repeat("d", 129)} {
		status, e := st.call(t, "POST", "/v1/messages", api.SendRequest{Conversation: "g", Sender: "ann", Device: device, Text: "hi"}, nil)
		if status != http.StatusBadRequest || e.Code != 1 || !strings.Contains(e.Error, "device id") {
			t.Errorf("device %q: %d %+v, want 400 naming the device id", device, status, e)
		}
		status, e = st.call(t, "POST", "/v1/messages", api.SendRequest{ToUser: "cat", Sender: "ann", Device: device, Text: "hi"}, nil)
		if status != http.StatusBadRequest {
			t.Errorf("device %q to a user: %d %+v, want 400", device, status, e)
		}
	}
	var h api.History
	st.must(t, "GET", "/v1/conversations/g/messages?reader=ann", nil, &h)
	if len(h.Messages) != 0 {
		t.Fatalf("refused sends stored %d messages", len(h.Messages))
	}
	var sent api.Sent
	st.must(t, "POST", "/v1/messages", api.SendRequest{Conversation: "g", Sender: "ann", Device: "phone-1", Text: "hi"}, &sent)
	st.must(t, "GET", "/v1/conversations/g/messages?reader=ann", nil, &h)
	if len(h.Messages) != 1 || h.Messages[0].SenderDevice != "phone-1" {
		t.Fatalf("a valid device: %+v", h.Messages)
	}
}

// rawCall posts body as it is, with the API key; it returns the status.
func (st *stack) rawCall(t *testing.T, path, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx(t), "POST", st.http.URL+path, strings.NewReader(body))
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
	return res.StatusCode, string(b)
}

// revoke-tokens and disconnect take no parameters: an empty body or {}
// runs them; any other body is refused before anything is done.
func TestActionsRefuseABody(t *testing.T) {
	st := start(t)
	issued := time.Now()
	phone, err := st.dial(t, "bob", "phone", issued, false)
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/v1/users/bob/revoke-tokens", "/v1/users/bob/devices/phone/disconnect"} {
		for _, body := range []string{"not json", `{"all":true}`, `[]`, `{}{}`, `"x"`, `{"user":"ann"}`} {
			if status, b := st.rawCall(t, path, body); status != http.StatusBadRequest || !strings.Contains(b, "request body") {
				t.Errorf("%s with body %q: %d %s, want 400", path, body, status, b)
			}
		}
	}
	if err := phone.Err(); err != nil {
		t.Fatalf("refused requests closed bob's phone: %v", err)
	}
	revs, err := transport.LoadRevocations(st.dir)
	if err != nil {
		t.Fatal(err)
	}
	if revs.Revoked("bob", issued) {
		t.Fatal("a refused revoke-tokens revoked bob's tokens")
	}
	for _, body := range []string{"", "{}", " { } \n"} {
		if status, b := st.rawCall(t, "/v1/users/zed/revoke-tokens", body); status != http.StatusOK {
			t.Errorf("revoke-tokens with body %q: %d %s", body, status, b)
		}
		if status, b := st.rawCall(t, "/v1/users/zed/devices/phone/disconnect", body); status != http.StatusOK {
			t.Errorf("disconnect with body %q: %d %s", body, status, b)
		}
	}
}
