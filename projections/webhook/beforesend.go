package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
	"unicode/utf8"
)

// BeforeSend is the synchronous before-send webhook: each message is
// POSTed to URL before it is decided, and the answer allows it, rejects
// it with a reason the sender sees, or rewrites its body. It is an
// adapter: the server calls Check from its before-decide hook.
//
// Request body (signed like the other webhooks, SignatureHeader):
//
//	{"conversation":"trip","sender":"ann","device":"phone","client_msg_id":"m1",
//	 "kind":"text","text":"hello","body":"aGVsbG8=","reply_to":0,"mentions":[]}
//
// Answer, status 200:
//
//	{"action":"allow"}
//	{"action":"reject","reason":"no links, please"}
//	{"action":"rewrite","text":"h*llo"}          (or "body": base64)
//
// Any other status, a malformed answer, or no answer within Timeout is
// a failure, handled by FailOpen.
type BeforeSend struct {
	URL    string
	Secret []byte
	// Timeout bounds one call (default 2 s); the message waits that long
	// at most.
	Timeout time.Duration
	// FailOpen: on a failure, allow the message unchanged. Otherwise
	// (fail closed) reject it (Verdict.Failed set).
	FailOpen bool
	Client   *http.Client
}

// Outgoing is the message the before-send webhook judges.
type Outgoing struct {
	Conversation string   `json:"conversation"`
	Sender       string   `json:"sender"`
	Device       string   `json:"device,omitempty"`
	ClientMsgID  string   `json:"client_msg_id,omitempty"`
	Kind         string   `json:"kind,omitempty"`
	Text         *string  `json:"text,omitempty"` // Body as text, when UTF-8
	Body         []byte   `json:"body"`
	ReplyTo      uint64   `json:"reply_to,omitempty"`
	Mentions     []string `json:"mentions,omitempty"`
}

// Verdict is the outcome of Check.
type Verdict struct {
	Allow  bool
	Reason string // why it was rejected (for the sender)
	// Body, when not nil, replaces the message's body (a rewrite).
	Body []byte
	// Failed: the webhook did not answer usably (Err says why); Allow
	// then follows FailOpen.
	Failed bool
	Err    error
}

// Actions of a before-send answer.
const (
	ActionAllow   = "allow"
	ActionReject  = "reject"
	ActionRewrite = "rewrite"
)

type beforeSendAnswer struct {
	Action string  `json:"action"`
	Reason string  `json:"reason"`
	Text   *string `json:"text"`
	Body   []byte  `json:"body"`
}

// ParseFailPolicy reads the value of --before-send-fail: "open" or "closed".
func ParseFailPolicy(s string) (failOpen bool, err error) {
	switch s {
	case "open":
		return true, nil
	case "closed":
		return false, nil
	}
	return false, fmt.Errorf("before-send fail policy %q: want open or closed", s)
}

// Validate checks the URL.
func (b *BeforeSend) Validate() error {
	u, err := url.Parse(b.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("webhook: before-send URL %q: want an http:// or https:// URL", b.URL)
	}
	return nil
}

// Check asks the webhook about m. It never returns without a verdict.
func (b *BeforeSend) Check(ctx context.Context, m Outgoing) Verdict {
	a, err := b.ask(ctx, m)
	if err != nil {
		v := Verdict{Allow: b.FailOpen, Failed: true, Err: err}
		if !b.FailOpen {
			v.Reason = "message check unavailable; try again"
		}
		return v
	}
	switch a.Action {
	case ActionAllow:
		return Verdict{Allow: true}
	case ActionReject:
		if a.Reason == "" {
			a.Reason = "rejected"
		}
		return Verdict{Reason: a.Reason}
	}
	// rewrite (ask checked it carries a body)
	body := a.Body
	if a.Text != nil {
		body = []byte(*a.Text)
	}
	return Verdict{Allow: true, Body: body}
}

func (b *BeforeSend) ask(ctx context.Context, m Outgoing) (beforeSendAnswer, error) {
	var a beforeSendAnswer
	if m.Text == nil && utf8.Valid(m.Body) {
		s := string(m.Body)
		m.Text = &s
	}
	body, err := json.Marshal(m)
	if err != nil {
		return a, err
	}
	timeout := b.Timeout
	if timeout <= 0 {
		timeout = 2 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, b.URL, bytes.NewReader(body))
	if err != nil {
		return a, err
	}
	req.Header.Set("Content-Type", "application/json")
	if len(b.Secret) > 0 {
		req.Header.Set(SignatureHeader, Sign(b.Secret, body))
	}
	client := b.Client
	if client == nil {
		client = http.DefaultClient
	}
	res, err := client.Do(req)
	if err != nil {
		return a, err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return a, fmt.Errorf("before-send webhook answered %s", res.Status)
	}
	if err := json.NewDecoder(io.LimitReader(res.Body, 1<<20)).Decode(&a); err != nil {
		return a, fmt.Errorf("before-send webhook: unreadable answer: %w", err)
	}
	switch a.Action {
	case ActionAllow, ActionReject:
	case ActionRewrite:
		if a.Text == nil && a.Body == nil {
			return a, errors.New("before-send webhook: a rewrite without text or body")
		}
	default:
		return a, fmt.Errorf("before-send webhook: unknown action %q", a.Action)
	}
	return a, nil
}
