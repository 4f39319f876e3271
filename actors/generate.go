package actors

//go:generate protoc -I. -I../events/eventspb --go_out=. --go_opt=paths=source_relative --go_opt=Mimsync_events.proto=github.com/imsync/imsync/events/eventspb imsync_actors.proto
