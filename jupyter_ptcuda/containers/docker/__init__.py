"""The Docker backend (:mod:`.service`) and its network-namespace holder (:mod:`.netns`)."""
