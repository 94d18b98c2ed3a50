"""Reinforcement-learning pieces for the MAML RL experiments (Finn et al. 2017, Section 5.3)."""
