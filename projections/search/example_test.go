package search_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/google/uuid"

	"github.com/imsync/imsync/events"
	"github.com/imsync/imsync/events/eventspb"
	"github.com/imsync/imsync/projections"
	"github.com/imsync/imsync/projections/search"
)

func Example() {
	ctx := context.Background()
	store, _ := events.OpenInMemory(events.Options{ScavengeInterval: -1})
	defer store.Close()
	for _, text := range []string{"quarterly report attached", "lunch?", "report: late again"} {
		e, _ := events.Encode(uuid.New(), &eventspb.MessageSent{Sender: "ann", ClientMsgId: uuid.NewString(), Kind: "text", Body: []byte(text)})
		store.AppendToStream(ctx, events.ConversationStream("g-team"), events.Any, e)
	}
	recall, _ := events.Encode(uuid.New(), &eventspb.MessageRecalled{Seq: 3, By: "ann"})
	last, _ := store.AppendToStream(ctx, events.ConversationStream("g-team"), events.Any, recall)

	dir, _ := os.MkdirTemp("", "search-example")
	defer os.RemoveAll(dir)
	idx, err := search.Open(filepath.Join(dir, "search"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer idx.Close()
	r := &projections.Runner{Store: store, Checkpoints: idx.Checkpoints(), Projection: idx, Until: last.Position}
	if err := r.Run(ctx); err != nil {
		fmt.Println(err)
		return
	}

	res, _ := idx.Search(ctx, search.Query{Text: "Report", Conversations: []string{"g-team"}})
	for _, h := range res.Hits {
		fmt.Println(h.Conversation, h.Seq, h.Sender, h.Text)
	}
	// Output:
	// g-team 1 ann quarterly report attached
}
