module github.com/phr-project/phr

go 1.26.8

require github.com/boombuler/barcode v1.1.0
