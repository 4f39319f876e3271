package actors

//go:generate protoc -I. -I../events --go_out=. --go_opt=paths=source_relative --go_opt=Mimsync_events.proto=github.com/imsync/imsync/events imsync_actors.proto
