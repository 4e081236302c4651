"""mmtlab.data"""
