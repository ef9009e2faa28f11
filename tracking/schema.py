"""The keys of the tracker group."""

from stagekit.schema import keys

SCHEMA = {"tracker": keys("name", "experiment", "tracking_uri", "dir", "project", "entity", "mode")}
