package events

//go:generate protoc --go_out=. --go_opt=paths=source_relative imsync_events.proto
