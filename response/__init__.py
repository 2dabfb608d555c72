"""Response: incidents, grading and the reporting clock, notices and rectification, campaigns
across enterprises, watchlists and STIX sharing (see README.md). Plain Python over the query
interface (pipeline.query) and its own state; the posture API serves it."""
