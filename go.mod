module github.com/phr-project/phr

go 1.26.8

require github.com/go-jose/go-jose/v4 v4.1.9

require (
	golang.org/x/crypto v0.58.0
	golang.org/x/sys v0.49.0 // indirect
)
