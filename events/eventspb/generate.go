package eventspb

//go:generate protoc --go_out=. --go_opt=paths=source_relative imsync_events.proto imsync_views.proto
