"""Faces in ordinary photos: BlazeFace detection (LiteRT) with a face-mesh check of each detection,
a landmark template measured on the aligned UTKFace crops, and the similarity warp that turns a
detected face into such a crop."""
