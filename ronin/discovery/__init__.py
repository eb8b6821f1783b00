"""Finding kOS nodes: job parameters, targets, scope, probes and the crawl."""
