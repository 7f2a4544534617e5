module github.com/qcache-go/qcache/bench

go 1.26.0

replace github.com/qcache-go/qcache => ../

require (
	github.com/maypok86/otter/v2 v2.4.0
	github.com/qcache-go/qcache v0.0.0-00010101000000-000000000000
	github.com/viccon/sturdyc v1.1.5
	go.uber.org/goleak v1.3.0
	golang.org/x/sync v0.25.0
)

require (
	github.com/cespare/xxhash/v2 v2.3.0 // indirect
	github.com/coder/websocket v1.8.15 // indirect
)
