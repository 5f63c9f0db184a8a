"""The shared CLIP trainer and its loss plugins (DESIGN §6): InfoNCE, UrbanLN's MSD, ..."""
