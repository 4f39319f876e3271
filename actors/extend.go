package actors

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"

	"github.com/imsync/imsync/events/eventspb"
)

// Extensions are the behaviours a program adds to the service at start
// (Config.Extensions); see docs/extending.md. They cannot break the
// service's guarantees: checks only propose a message that the rules then
// decide, kinds only choose among fixed rules, and reactors act through the
// Service like any client. None of them writes a stream.
type Extensions struct {
	// Checks run in order before a send or an edit is decided; each sees
	// the draft the previous one left.
	Checks []Check
	// Kinds give message kinds their own validation and unread, list and
	// push rules. Kinds not listed (and "text") are ordinary messages.
	Kinds []MessageKind
	// Reactors are called with every committed conversation event, after
	// the commit, from their own checkpoint.
	Reactors []Reactor
}

// With returns e followed by more: checks of more run after e's.
func (e Extensions) With(more Extensions) Extensions {
	return Extensions{
		Checks:   append(slices.Clone(e.Checks), more.Checks...),
		Kinds:    append(slices.Clone(e.Kinds), more.Kinds...),
		Reactors: append(slices.Clone(e.Reactors), more.Reactors...),
	}
}

var registered struct {
	sync.Mutex
	ext Extensions
}

// Register adds extensions for `imsync serve`: a plugin package calls it
// from its init function, and a blank import of the package in a file of
// cmd/imsync links it in (docs/extending.md). Programs with their own main
// pass their extensions in Config.Extensions instead (or add Registered()).
func Register(e Extensions) {
	registered.Lock()
	defer registered.Unlock()
	registered.ext = registered.ext.With(e)
}

// Registered returns every extension registered so far, in the order
// registered.
func Registered() Extensions {
	registered.Lock()
	defer registered.Unlock()
	return Extensions{}.With(registered.ext)
}

// DefaultCheckTimeout bounds a check that sets no Timeout.
const DefaultCheckTimeout = 200 * time.Millisecond

// MaxChecksTimeout bounds the sum of the checks' timeouts: a message is
// checked well within one attempt of a service request (3 s), so that a
// slow check is never mistaken for a lost request.
const MaxChecksTimeout = 2 * time.Second

// Check inspects (and may change) a message before the conversation
// decides it: moderation, rewriting, metadata.
//
// Func returns nil to let the draft through as it left it, or an error
// made by Reject to refuse the message: the sender gets code REJECTED with
// the reason. Anything else — another error, a panic, not returning within
// Timeout — is a failure of the check: by default (fail-closed) the sender
// gets CHECK_FAILED, with Reason the check's name, and may retry; with
// FailOpen the check is skipped (the draft goes on as it was before this
// check).
//
// Func is called from many goroutines at once (one per message being
// checked); it gets a copy of the draft, so it may change Body in place.
// A send whose client message id the conversation already stored is
// answered as a duplicate without calling any check, as is every command
// the rules refuse anyway (a non-member's, an oversized one): a check only
// sees messages the conversation would accept, and a retried send never
// reaches it again once the first one is stored.
type Check struct {
	Name     string // in logs and in CHECK_FAILED answers; required
	Func     func(ctx context.Context, d *Draft) error
	Timeout  time.Duration // default DefaultCheckTimeout
	FailOpen bool
}

// Draft is a message on its way to be decided. Checks may change Kind,
// Body and Metadata (of an edit, only Body counts: its Kind and ReplyTo
// are the edited message's); the rest is read-only.
// Whatever a check leaves is decided by the same rules as a client's
// message: a body rewritten beyond MaxBodySize is refused with TOO_LARGE.
type Draft struct {
	Kind     string
	Body     []byte
	Metadata map[string]string

	conv, sender, device, clientID string
	replyTo, edits                 uint64
	mentions                       []string
}

// Conversation is the id of the conversation the message goes to.
func (d *Draft) Conversation() string { return d.conv }

// Sender is the user sending (or editing).
func (d *Draft) Sender() string { return d.sender }

// Device is the sender's device (may be empty).
func (d *Draft) Device() string { return d.device }

// ClientMsgID is the sender's id of the message (empty for an edit).
func (d *Draft) ClientMsgID() string { return d.clientID }

// ReplyTo is the seq of the message replied to (0: none).
func (d *Draft) ReplyTo() uint64 { return d.replyTo }

// Mentions are the members the message mentions.
func (d *Draft) Mentions() []string { return slices.Clone(d.mentions) }

// Edits is the seq of the message an edit replaces, 0 for a new message.
func (d *Draft) Edits() uint64 { return d.edits }

func (d *Draft) clone() *Draft {
	c := *d
	c.Body = bytes.Clone(d.Body)
	c.Metadata = maps.Clone(d.Metadata)
	return &c
}

// Sentinels of the extension codes, for errors.Is.
var (
	ErrRejected    = &Failure{Code: Code_REJECTED}
	ErrCheckFailed = &Failure{Code: Code_CHECK_FAILED}
)

// Reject refuses a message from a Check: the sender gets code REJECTED,
// Failure.Reason (the wire Error's reason) = reason — a short code the app
// decides on, such as "profanity" — and the message.
func Reject(reason, format string, args ...any) error {
	f := fail(Code_REJECTED, format, args...)
	f.Reason = reason
	return f
}

// MessageKind gives messages of one kind (SendRequest.Kind) their rules.
// The zero rules are those of an ordinary message; reactions, for example,
// set NotUnread and NoBump.
type MessageKind struct {
	Name string // the kind, 1..128 bytes; not "text"
	// Validate, if set, checks a message of this kind after the common
	// rules (membership, sizes, the message replied to exists), and every
	// edit of one (Draft.Edits set; Kind and ReplyTo the message's, Body the
	// new one); an error refuses it with INVALID (or the *Failure returned).
	// It runs inside the conversation, so it must be quick and must not
	// block.
	Validate func(d Draft) error
	// NotUnread: the message does not count as unread (for anyone).
	NotUnread bool
	// NoBump: the message does not become the conversation's latest
	// message, nor move the conversation up the list.
	NoBump bool
	// NoPush: devices are not pushed for it; they see it at their next
	// pull (it is in the sync timeline all the same).
	NoPush bool
}

// Metadata limits: a message carries at most MaxMetadataKeys entries whose
// keys and values together take at most MaxMetadataSize bytes.
const (
	MaxMetadataKeys = 32
	MaxMetadataSize = 4 << 10
)

// extensions is the validated, indexed form of Config.Extensions.
type extensions struct {
	checks   []Check
	kinds    map[string]MessageKind
	reactors []Reactor
}

func (e Extensions) compile() (*extensions, error) {
	out := &extensions{kinds: map[string]MessageKind{}}
	names := map[string]bool{}
	var total time.Duration
	for i, c := range e.Checks {
		if c.Name == "" || c.Func == nil {
			return nil, fmt.Errorf("actors: Extensions.Checks[%d] needs a Name and a Func", i)
		}
		if names[c.Name] {
			return nil, fmt.Errorf("actors: two checks named %q", c.Name)
		}
		names[c.Name] = true
		if c.Timeout <= 0 {
			c.Timeout = DefaultCheckTimeout
		}
		out.checks = append(out.checks, c)
		total += c.Timeout
	}
	if total > MaxChecksTimeout {
		return nil, fmt.Errorf("actors: the checks' timeouts add up to %s, more than %s", total, MaxChecksTimeout)
	}
	for i, k := range e.Kinds {
		if k.Name == "" || len(k.Name) > maxIDLen || !utf8.ValidString(k.Name) {
			return nil, fmt.Errorf("actors: Extensions.Kinds[%d]: a kind is named by 1..%d bytes of UTF-8", i, maxIDLen)
		}
		if k.Name == "text" {
			return nil, errors.New(`actors: kind "text" is the ordinary message and cannot be redefined`)
		}
		if _, dup := out.kinds[k.Name]; dup {
			return nil, fmt.Errorf("actors: kind %q defined twice", k.Name)
		}
		out.kinds[k.Name] = k
	}
	reactors := map[string]bool{}
	for i, r := range e.Reactors {
		if r.React == nil {
			return nil, fmt.Errorf("actors: Extensions.Reactors[%d] needs React", i)
		}
		if !validReactorName(r.Name) {
			return nil, fmt.Errorf("actors: reactor name %q: want 1..100 of [A-Za-z0-9._-]", r.Name)
		}
		if reactors[r.Name] {
			return nil, fmt.Errorf("actors: two reactors named %q", r.Name)
		}
		reactors[r.Name] = true
		out.reactors = append(out.reactors, r)
	}
	return out, nil
}

// kind returns the rules of a message kind (the zero rules when none are
// registered); safe on a nil receiver.
func (x *extensions) kind(name string) (MessageKind, bool) {
	if x == nil {
		return MessageKind{}, false
	}
	k, ok := x.kinds[name]
	return k, ok
}

// validateKind runs a kind's Validate, turning a panic into a refusal: a
// kind's rule never takes the conversation down.
func validateKind(k MessageKind, d Draft) (f *Failure) {
	if k.Validate == nil {
		return nil
	}
	defer func() {
		if r := recover(); r != nil {
			f = fail(Code_INVALID, "kind %q: validation failed: %v", k.Name, r)
		}
	}()
	err := k.Validate(d)
	if err == nil {
		return nil
	}
	var ff *Failure
	if errors.As(err, &ff) {
		return ff
	}
	return fail(Code_INVALID, "kind %q: %v", k.Name, err)
}

func checkMetadata(md map[string]string) *Failure {
	if len(md) > MaxMetadataKeys {
		return fail(Code_TOO_LARGE, "%d metadata entries exceed %d", len(md), MaxMetadataKeys)
	}
	size := 0
	for k, v := range md {
		if k == "" {
			return fail(Code_INVALID, "empty metadata key")
		}
		size += len(k) + len(v)
	}
	if size > MaxMetadataSize {
		return fail(Code_TOO_LARGE, "metadata of %d bytes exceeds %d", size, MaxMetadataSize)
	}
	return nil
}

// draftOf returns the draft of a send or an edit, or nil for other commands.
func draftOf(conv string, cmd any) *Draft {
	switch c := cmd.(type) {
	case *SendMessage:
		kind := c.Kind
		if kind == "" {
			kind = "text"
		}
		return &Draft{Kind: kind, Body: c.Body, Metadata: c.Metadata, conv: conv, sender: c.Sender, device: c.Device,
			clientID: c.ClientMsgId, replyTo: c.ReplyTo, mentions: c.Mentions}
	case *EditMessage:
		return &Draft{Body: c.Body, conv: conv, sender: c.Actor, edits: c.Seq}
	}
	return nil
}

// withDraft is the command carrying what the checks left of its draft.
func withDraft(cmd any, d *Draft) any {
	switch c := cmd.(type) {
	case *SendMessage:
		// Checks change the content only: where it goes and as whom stay.
		out := &SendMessage{Sender: c.Sender, Device: c.Device, ClientMsgId: c.ClientMsgId, Kind: d.Kind,
			Body: d.Body, ReplyTo: c.ReplyTo, Mentions: c.Mentions, Metadata: d.Metadata, ToUser: c.ToUser, System: c.System}
		return out
	case *EditMessage:
		return &EditMessage{Actor: c.Actor, Seq: c.Seq, Body: d.Body}
	}
	return cmd
}

// runChecks runs the checks in order on d and returns the draft they leave
// or the failure to answer. It never panics and returns within the sum of
// the checks' timeouts (a check that does not return in time is left
// running on its own copy of the draft).
func runChecks(checks []Check, d *Draft, onFailure func(name string, err error)) (*Draft, *Failure) {
	for _, c := range checks {
		next, err := runCheck(c, d)
		if err == nil {
			d = next
			continue
		}
		var f *Failure
		if errors.As(err, &f) && f.Code == Code_REJECTED {
			return nil, f
		}
		onFailure(c.Name, err)
		if c.FailOpen {
			continue
		}
		out := fail(Code_CHECK_FAILED, "check %s: %v", c.Name, err)
		out.Reason = c.Name
		return nil, out
	}
	return d, nil
}

var errCheckTimeout = errors.New("timed out")

func runCheck(c Check, d *Draft) (*Draft, error) {
	ctx, cancel := context.WithTimeout(context.Background(), c.Timeout)
	defer cancel()
	mine := d.clone()
	done := make(chan error, 1)
	go func() {
		defer func() {
			if r := recover(); r != nil {
				done <- fmt.Errorf("panic: %v", r)
			}
		}()
		done <- c.Func(ctx, mine)
	}()
	select {
	case err := <-done:
		if err != nil {
			return nil, err
		}
		return mine, nil
	case <-ctx.Done():
		return nil, errCheckTimeout
	}
}

// pushes says whether new inbox entries warrant a push to the devices:
// any entry but messages whose kind says NoPush.
func pushes(entries []proto.Message) bool {
	for _, m := range entries {
		if p, ok := m.(*eventspb.MessagePointer); !ok || !p.NoPush {
			return true
		}
	}
	return false
}
