module incident-harness/capfilter

go 1.21
