"""mmtlab.features"""
