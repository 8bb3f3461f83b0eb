from setuptools import find_packages, setup


def read_requirements(name):
    with open(f'requirements/{name}.txt') as f:
        return [
            line.split('#')[0].strip() for line in f
            if line.split('#')[0].strip()
        ]


setup(
    name='mmgal',
    version='0.1.0',
    description='Gradient Adjustment Learning (GAL) for the OpenMMLab stack',
    long_description=open('README.md').read(),
    long_description_content_type='text/markdown',
    python_requires='>=3.8',
    packages=find_packages(include=['mmgal', 'mmgal.*']),
    install_requires=read_requirements('runtime'),
    extras_require={
        'mm': read_requirements('mm'),
        'tests': read_requirements('tests'),
    },
)
