# Dynamic speaker-mix track for `inference_main.py -usm` (so-vits-svc 4.1 format).
#
# This file is DATA: it is read with Python's `ast` module, never imported or executed, so it may
# only contain the literal assignment below (numbers, lists, one dict).
#
#   speaker_id: [[t_start, t_end, weight_start, weight_end], ...]
#
# * speaker_id: the integer id from the "spk" map of the model's config.json (0, 1, ...);
#   every speaker of the model needs an entry; an unused speaker is [[0., 1., 0., 0.]].
# * times are fractions of the whole song (0 = start, 1 = end); the first segment starts at 0,
#   each next one starts where the previous one ended, the last one ends at 1.
# * inside a segment the weight moves linearly from weight_start to weight_end (weights >= 0).
#   At each moment the weights of all speakers are scaled to sum to 1; where they are all 0,
#   every speaker gets the same share.
#
# Example for a model with three speakers: speaker 0 fades out over the song while speaker 1
# fades in; speaker 2 is not used.
spk_mix_map = {
    0: [[0.0, 0.5, 1.0, 0.5], [0.5, 1.0, 0.5, 0.0]],
    1: [[0.0, 0.5, 0.0, 0.5], [0.5, 1.0, 0.5, 1.0]],
    2: [[0.0, 1.0, 0.0, 0.0]],
}
