"""Marketing: campaigns and members, leads, capture forms, lead conversion."""
