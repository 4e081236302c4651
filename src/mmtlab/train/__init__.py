"""mmtlab.train"""
