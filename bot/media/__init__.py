"""Media in the core: images in (``images``), audio decoding and encoding (``audio``), voice in and out
(``voice``), the media tools of the agent (``tools``) and the durable jobs that deliver late media (``jobs``)."""
