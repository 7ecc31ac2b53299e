"""Reports: the builder and atomic writer of a report folder (:mod:`.builder`), its sections
(:mod:`.sections`), the first-screen summary (:mod:`.summary`), the sections of an analysis of
one's own network (:mod:`.analysis`), the built-in studies (:mod:`.studies`) and the Jinja2
templates (``templates/``)."""
