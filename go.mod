module github.com/phr-project/phr

go 1.26.8
