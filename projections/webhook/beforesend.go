package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"time"
	"unicode/utf8"

	"github.com/imsync/imsync/actors"
)

// BeforeSend is the synchronous before-send webhook: each message is
// POSTed to URL before it is decided, and the answer allows it, rejects
// it with a reason the sender sees, or rewrites it. AsCheck makes it an
// actors.Check (`imsync serve --before-send-webhook URL` does that); Check
// asks about one message.
//
// Request body (signed like the other webhooks, SignatureHeader):
//
//	{"conversation":"trip","sender":"ann","device":"phone","client_msg_id":"m1",
//	 "kind":"text","text":"hello","body":"aGVsbG8=","reply_to":0,"mentions":[]}
//
// (an edit carries "edits": the seq of the message it replaces, its new
// body, and the message's kind and reply_to; a rewrite changes its body only).
// Answer, status 200:
//
//	{"action":"allow"}
//	{"action":"reject","reason":"no links, please"}
//	{"action":"rewrite","text":"h*llo"}          (or "body": base64; "metadata": entries to set)
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
	// Metadata of the message (from the sender or an earlier check).
	Metadata map[string]string `json:"metadata,omitempty"`
	// Edits is the seq of the message an edit replaces (0: a new message).
	Edits uint64 `json:"edits,omitempty"`
}

// Verdict is the outcome of Check.
type Verdict struct {
	Allow  bool
	Reason string // why it was rejected (for the sender)
	// Body, when not nil, replaces the message's body (a rewrite).
	Body []byte
	// Metadata entries a rewrite sets on the message (added or replaced).
	Metadata map[string]string
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
	Action   string            `json:"action"`
	Reason   string            `json:"reason"`
	Text     *string           `json:"text"`
	Body     []byte            `json:"body"`
	Metadata map[string]string `json:"metadata"`
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
	// rewrite (ask checked it carries something)
	body := a.Body
	if a.Text != nil {
		body = []byte(*a.Text)
	}
	return Verdict{Allow: true, Body: body, Metadata: a.Metadata}
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
	ctx, cancel := context.WithTimeout(ctx, b.timeout())
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
		if a.Text == nil && a.Body == nil && a.Metadata == nil {
			return a, errors.New("before-send webhook: a rewrite without text, body or metadata")
		}
	default:
		return a, fmt.Errorf("before-send webhook: unknown action %q", a.Action)
	}
	return a, nil
}

// DefaultBeforeSendTimeout bounds a call when BeforeSend.Timeout is not set.
const DefaultBeforeSendTimeout = 2 * time.Second

func (b *BeforeSend) timeout() time.Duration {
	if b.Timeout <= 0 {
		return DefaultBeforeSendTimeout
	}
	return b.Timeout
}

// CheckName is the name of the check AsCheck returns: in logs, and the
// reason of a CHECK_FAILED answer when the webhook fails closed.
const CheckName = "before-send-webhook"

// AsCheck returns the webhook as a check of every send and edit
// (actors.Config.Extensions.Checks). Its deadline is the webhook's
// Timeout, the one deadline of the call (the HTTP request is cancelled
// when the check gives up), and its failure policy is FailOpen, so that a
// webhook that does not answer in time is handled alike whichever notices
// first:
//
//   - allow: the message goes on unchanged;
//   - reject: the sender gets REJECTED with the webhook's reason;
//   - rewrite: the message goes on with the new body and metadata (held
//     to the same rules as a client's message: a body too large is
//     refused with TOO_LARGE);
//   - failure (no answer in time, another status, a malformed answer):
//     fail closed, the sender gets CHECK_FAILED with reason CheckName and
//     may retry; fail open, the message goes on unchanged. Either way the
//     failure is logged.
func (b *BeforeSend) AsCheck() actors.Check {
	return actors.Check{
		Name:     CheckName,
		Timeout:  b.timeout(),
		FailOpen: b.FailOpen,
		Func: func(ctx context.Context, d *actors.Draft) error {
			v := b.Check(ctx, Outgoing{
				Conversation: d.Conversation(), Sender: d.Sender(), Device: d.Device(),
				ClientMsgID: d.ClientMsgID(), Kind: d.Kind, Body: d.Body, ReplyTo: d.ReplyTo(),
				Mentions: d.Mentions(), Metadata: d.Metadata, Edits: d.Edits(),
			})
			switch {
			case v.Failed:
				return v.Err // the check's failure policy applies
			case !v.Allow:
				return actors.Reject(v.Reason, "refused by the before-send webhook: %s", v.Reason)
			}
			if v.Body != nil {
				d.Body = v.Body
			}
			if len(v.Metadata) > 0 {
				if d.Metadata == nil {
					d.Metadata = map[string]string{}
				}
				maps.Copy(d.Metadata, v.Metadata)
			}
			return nil
		},
	}
}
