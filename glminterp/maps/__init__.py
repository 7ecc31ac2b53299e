"""Maps over the input: class activation maps and Grad-CAM(++) (:mod:`.cam`), their standard
errors, z maps and simultaneous masks (:mod:`.cam_uncertainty`), and faithfulness metrics
(:mod:`.faithfulness`)."""
