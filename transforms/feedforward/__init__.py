"""Fast neural style (Johnson et al. 2016): one small network per style, trained on the perceptual
loss of transforms.nst, then applied to any photo in one forward pass. Never imports apache_beam."""
