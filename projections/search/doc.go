// Package search is the search projection: a bleve full-text index of
// the messages in the conversation streams, with field filters
// (conversation, sender, kind, time range). Recalled messages leave the
// index; edits replace their text.
//
// # Usage
//
//	idx, err := search.Open(filepath.Join(data, "projections", "search"))
//	if err != nil { ... }
//	defer idx.Close()
//
//	// Feed it: the checkpoint lives inside the index.
//	r := &projections.Runner{Store: store, Checkpoints: idx.Checkpoints(), Projection: idx}
//	go r.Run(ctx) // history from the checkpoint, then live
//
//	res, err := idx.Search(ctx, search.Query{
//		Text:          "quarterly report",   // every word, case ignored
//		Conversations: []string{"g-team"}, // nil: all; a server passes the caller's
//		Sender:        "ann",
//		From:          time.Now().Add(-7 * 24 * time.Hour),
//		Limit:         20,
//	})
//	for _, h := range res.Hits { fmt.Println(h.Conversation, h.Seq, h.Sender, h.Text) }
//	// res.More: ask again with Offset += len(res.Hits)
//
// # Checkpoint and restarts
//
// Handle only stages documents. Saving the checkpoint (the runner does it
// every Runner.SaveEvery events and when the stream goes idle) writes the
// staged documents and the checkpoint position in one bleve batch: the
// index on disk always holds exactly the events up to its checkpoint, so
// a restart resumes after it, neither skipping nor applying an event
// twice. Searches see what has been saved. Loading the checkpoint drops
// what was staged since (it is delivered again); Reset (a rebuild) empties
// the index. A save returns once bleve has written the batch to disk.
//
// The index lives in its own directory; `imsync serve` and `imsync replay
// --projection search` use DATA/projections/search. Only one process may
// open it at a time: a second Open fails after a second.
//
// # What is indexed
//
// One document per MessageSent, id "<conversation>/<seq>": conversation,
// seq, sender, kind (keywords), the time sent (at_unix_ms, or the time
// the store recorded it), and the body as text when it is UTF-8 (split
// into words of any script, lower-cased; no stemming, no stop words).
// MessageEdited replaces the text and marks the hit Edited;
// MessageRecalled deletes the document.
package search
