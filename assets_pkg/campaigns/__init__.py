"""The campaigns group: a drop's briefs, the reference images found for them, and the generated images."""
