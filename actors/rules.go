package actors

import (
	"errors"
	"fmt"
	"slices"
	"time"
)

// Limits are the product rules that the pure cores enforce.
type Limits struct {
	MaxBodySize  int           // bytes of a message body (default 16 KiB)
	MaxGroupSize int           // members of a group (default 100,000)
	MaxNameLen   int           // bytes of a group name (default 256)
	RecallWindow time.Duration // how long after sending a message can be recalled (default 2 min)
	EditWindow   time.Duration // how long after sending a message can be edited (default 15 min)
	// ReadFanoutThreshold: groups with more members than this are read-fanout
	// (no inbox entry per message; members pull the timeline). Default 500.
	ReadFanoutThreshold int
	// InlineMaxSize: message bodies up to this size travel inside inbox
	// entries and pushes (default 1 KiB).
	InlineMaxSize int
	// DedupWindow: client message ids remembered per conversation (default 100,000).
	DedupWindow int
	// MaxMentions: distinct members one message may mention (default 100).
	MaxMentions int

	ext *extensions // the message kinds of Config.Extensions (set by Start)
}

// DefaultLimits are the limits used where none are configured.
func DefaultLimits() Limits {
	return Limits{
		MaxBodySize:         16 << 10,
		MaxGroupSize:        100_000,
		MaxNameLen:          256,
		RecallWindow:        2 * time.Minute,
		EditWindow:          15 * time.Minute,
		ReadFanoutThreshold: 500,
		InlineMaxSize:       1 << 10,
		DedupWindow:         100_000,
		MaxMentions:         100,
	}
}

func (l Limits) orDefaults() Limits {
	d := DefaultLimits()
	if l.MaxBodySize > 0 {
		d.MaxBodySize = l.MaxBodySize
	}
	if l.MaxGroupSize > 0 {
		d.MaxGroupSize = l.MaxGroupSize
	}
	if l.MaxNameLen > 0 {
		d.MaxNameLen = l.MaxNameLen
	}
	if l.RecallWindow > 0 {
		d.RecallWindow = l.RecallWindow
	}
	if l.EditWindow > 0 {
		d.EditWindow = l.EditWindow
	}
	if l.ReadFanoutThreshold > 0 {
		d.ReadFanoutThreshold = l.ReadFanoutThreshold
	}
	if l.InlineMaxSize > 0 {
		d.InlineMaxSize = l.InlineMaxSize
	}
	if l.DedupWindow > 0 {
		d.DedupWindow = l.DedupWindow
	}
	if l.MaxMentions > 0 {
		d.MaxMentions = l.MaxMentions
	}
	d.ext = l.ext
	return d
}

// Error implements error: a *Failure is what every grain and the Service
// return for refusals.
func (f *Failure) Error() string {
	return fmt.Sprintf("%s: %s", f.GetCode(), f.GetMessage())
}

// Is makes errors.Is(err, ErrNotFound) (etc.) compare codes.
func (f *Failure) Is(target error) bool {
	var t *Failure
	return errors.As(target, &t) && t.GetMessage() == "" && t.GetCode() == f.GetCode()
}

// Sentinels for errors.Is.
var (
	ErrInvalid     = &Failure{Code: Code_INVALID}
	ErrNotFound    = &Failure{Code: Code_NOT_FOUND}
	ErrForbidden   = &Failure{Code: Code_FORBIDDEN}
	ErrConflict    = &Failure{Code: Code_CONFLICT}
	ErrTooLarge    = &Failure{Code: Code_TOO_LARGE}
	ErrExpired     = &Failure{Code: Code_EXPIRED}
	ErrUnavailable = &Failure{Code: Code_UNAVAILABLE}
)

func fail(code Code, format string, args ...any) *Failure {
	return &Failure{Code: code, Message: fmt.Sprintf(format, args...)}
}

// notFound is the answer to unknown conversations and to non-members alike,
// so that a stranger cannot learn that a conversation exists.
func notFound(conv string) *Failure {
	return fail(Code_NOT_FOUND, "conversation %q not found", conv)
}

// idNotAvailable refuses a group id that a creator may not take: one in use
// by a conversation they did not create, or one reserved for direct
// conversations. Both get this same answer, so that it says nothing about
// whether a conversation exists.
func idNotAvailable(conv string) *Failure {
	return fail(Code_CONFLICT, "conversation id %q is not available", conv)
}

const maxIDLen = 128

// ValidateID checks a user, device or conversation id: 1..128 bytes of
// letters, digits and . _ - @, other than "." and ".." (ids become parts
// of stream names and of URL paths, where those two mean directories).
func ValidateID(what, id string) error {
	if id == "" {
		return fail(Code_INVALID, "empty %s id", what)
	}
	if id == "." || id == ".." {
		return fail(Code_INVALID, "%s id %q: . and .. are not ids (they name directories in paths)", what, id)
	}
	if len(id) > maxIDLen {
		return fail(Code_INVALID, "%s id of %d bytes exceeds %d", what, len(id), maxIDLen)
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-' || r == '@') {
			return fail(Code_INVALID, "%s id %q: only letters, digits and . _ - @ are allowed", what, id)
		}
	}
	return nil
}

// DirectID is the conversation id of the direct conversation between a and
// b: the same whichever side opens it, so it is never duplicated.
func DirectID(a, b string) string {
	pair := []string{a, b}
	slices.Sort(pair)
	return "dm-" + pair[0] + "~" + pair[1]
}

// validateConvID accepts ids made by DirectID and plain ids.
func validateConvID(id string) error {
	if len(id) > 3+2*maxIDLen+1 {
		return fail(Code_INVALID, "conversation id too long")
	}
	if a, b, ok := splitDirect(id); ok {
		if err := ValidateID("user", a); err != nil {
			return err
		}
		return ValidateID("user", b)
	}
	return ValidateID("conversation", id)
}

func splitDirect(id string) (a, b string, ok bool) {
	if len(id) < 3 || id[:3] != "dm-" {
		return "", "", false
	}
	for i := 3; i < len(id); i++ {
		if id[i] == '~' {
			return id[3:i], id[i+1:], true
		}
	}
	return "", "", false
}
