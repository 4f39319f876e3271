package actors

import (
	"slices"

	"google.golang.org/protobuf/proto"

	"github.com/imsync/imsync/events/eventspb"
)

// ConversationList is a user's conversation list as the user grain keeps
// it: a fold over the user's sync timeline (inbox-<user>). Apply is the
// grain's own evolve, so any replay of the stream — a projections.Runner
// included — builds exactly the state the grain holds: one mechanism, not
// two. It is not safe for concurrent use.
//
// The list holds what the sync timeline says. Read-fanout groups keep
// their latest message and unread counts in the group itself (their
// messages never reach the inbox); the grain asks them when it answers,
// and so List shows those lines as the timeline left them.
type ConversationList struct{ s *userState }

// NewConversationList returns the empty list of user.
func NewConversationList(user string) *ConversationList {
	return &ConversationList{s: newUserState(user)}
}

// Apply folds the inbox entry stored at userSeq (its stream revision + 1)
// into the list. Entries must come in order, each once.
func (l *ConversationList) Apply(userSeq uint64, ev proto.Message) { evolveUser(l.s, userSeq, ev) }

// List returns the conversations the user is a member of, in the order of
// the grain's list (newest activity first, then by id), and the user seq
// the list covers.
func (l *ConversationList) List() *eventspb.ConversationList {
	lines := listLines(l.s, &ListConversations{})
	slices.SortFunc(lines, func(a, b *eventspb.ConversationSummary) int { return posOf(a).cmp(posOf(b)) })
	return &eventspb.ConversationList{UserSeq: l.s.userSeq, Conversations: lines}
}
